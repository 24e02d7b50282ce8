"""Augmented crops of a trained run's test images, embedded by its C: what ``bench scale``'s
ReID-like features are fitted to (:mod:`.feature_fit`) and checked against.

Why augmented crops: the run's test split has a few images per identity (8 in the embedded set),
too few to estimate a within-identity covariance in C's 256 or 512 dimensions; random crops,
scale, flips and colour jitter of each image give C's own spread of one person's features. Crop 0
of every image is the plain test-transform resize (what ``test`` scores).

The fit is then calibrated (one scale of the per-image spread, :func:`calibrate`) so that drawn
features' exact-search mAP on the run's own test layout is the real one, and checked: R1/mAP of
real and drawn features on that layout, on a gallery of crops, and (``check_identities``) on
another data root with more identities than the fit saw.

Timing: the augmentation plus C's forward pass of the O crops is timed alone (``crops_per_s``),
so ``bench scale`` can say how long embedding a million crops would take instead of fitting.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from torchreid_privacy.bench.feature_fit import FeatureModel, fit, l2n

CROPS_PER_IMAGE = 16
MILLION = 1_000_000


# mild, as the transforms C was trained with (flips): strong jitter and crops (area 0.6, jitter 0.3,
# hue 0.05) put the quickstart run's crops off its features' manifold (a fit to them: test-layout mAP
# 0.59 against the real 0.755)
AREA, JITTER, HUE = 0.8, 0.1, 0.0
CALIBRATION_DRAWS = 4


def augmenter(height: int, width: int, area: float = AREA, jitter: float = JITTER, hue: float = HUE):
    """PIL image -> [0,1] (3, height, width): a random crop of ``area``-100% of the image at about the
    model's aspect ratio, a horizontal flip half the time, colour jitter (brightness, contrast,
    saturation ``jitter``, hue ``hue``)."""
    from torchvision import transforms as T

    aspect = width / height
    return T.Compose([T.RandomResizedCrop((height, width), scale=(area, 1.0), ratio=(0.9 * aspect, 1.1 * aspect),
                                          antialias=True),
                      T.RandomHorizontalFlip(), T.ColorJitter(jitter, jitter, jitter, hue), T.ToTensor()])


def plain(height: int, width: int):
    """The test transform's resize (PIL bilinear), to [0,1]."""
    from torchvision import transforms as T

    return T.Compose([T.Resize((height, width)), T.ToTensor()])


@dataclass
class RunCrops:
    """C's features of ``crops_per_image`` crops of each test image whose pid is a person (> 0)."""

    o: np.ndarray          # (n, d) C(O crop), raw (not normalized)
    p: np.ndarray          # (n, d) C(P as published) of the same crops
    pids: np.ndarray
    cams: np.ndarray
    image: np.ndarray      # source image number
    crop: np.ndarray       # 0: the plain resize
    is_query: np.ndarray   # the image is in the run's query split
    seconds_o: float       # augmenting and embedding the O crops
    run: str
    target: str
    seconds_p: float = 0.0  # anonymizing, publishing (JPEG) and embedding them

    @property
    def crops_per_s(self) -> float:
        return len(self.o) / max(self.seconds_o, 1e-9)


def person_images(run: Any, target: Optional[str] = None) -> Tuple[str, List[Tuple[str, int, int, bool]]]:
    """(target, [(path, pid, camid, is_query)]) of the run's test split (default: its first test
    target), persons only (pid > 0: no junk, no distractors)."""
    target = target or run.test_targets[0]
    if target not in run.test_targets:
        raise ValueError(f"target: {target!r} is not one of the run's test targets ({', '.join(run.test_targets)})")
    ds = run.datamanager.test_loader[target]["query"].dataset
    items = [(str(r[0]), int(r[1]), int(r[2]), q) for q, rows in ((True, ds.query), (False, ds.gallery))
             for r in rows if int(r[1]) > 0]
    return target, items


@torch.no_grad()
def embed_run_crops(run_path: str, crops_per_image: int = CROPS_PER_IMAGE, batch_size: int = 256, seed: int = 0,
                    target: Optional[str] = None) -> RunCrops:
    """Open the run (``torchreid_privacy.trained_run``), crop and embed its test images."""
    from torchreid_privacy import bridge
    from torchreid_privacy.trained_run import TrainedRun

    if crops_per_image < 1:
        raise ValueError(f"--crops-per-image: expected >= 1, got {crops_per_image}")
    if not os.path.exists(run_path):
        raise FileNotFoundError(f"--features-from: no such run or file: {run_path}")
    run = TrainedRun.open(run_path)
    target, items = person_images(run, target)
    model = run.model.eval()
    h, w = model.height, model.width
    aug, first = augmenter(h, w), plain(h, w)
    torch.manual_seed(seed)  # torchvision's random transforms draw from torch's generator
    gen = torch.Generator(device=model.device).manual_seed(seed)  # a random desensitizer (baseline runs)
    images = [bridge.read_image(path) for path, *_ in items]
    jobs = [(i, c) for i in range(len(items)) for c in range(crops_per_image)]
    o: List[torch.Tensor] = []
    p: List[torch.Tensor] = []
    seconds = seconds_p = 0.0
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        t0 = time.perf_counter()
        x01 = torch.stack([(first if c == 0 else aug)(images[i]) for i, c in chunk]).to(model.device)
        o.append(model.features(x01).cpu())
        t1 = time.perf_counter()
        p.append(model.features(model.protect(x01, generator=gen)).cpu())
        seconds, seconds_p = seconds + t1 - t0, seconds_p + time.perf_counter() - t1
    idx = np.array([i for i, _ in jobs])
    return RunCrops(o=torch.cat(o).numpy(), p=torch.cat(p).numpy(),
                    pids=np.array([items[i][1] for i in idx]), cams=np.array([items[i][2] for i in idx]),
                    image=idx, crop=np.array([c for _, c in jobs]), is_query=np.array([items[i][3] for i in idx]),
                    seconds_o=seconds, run=run.path, target=target, seconds_p=seconds_p)


def exact_metrics(qf: np.ndarray, gf: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_cams: np.ndarray,
                  g_cams: np.ndarray) -> Dict[str, float]:
    """R1 and mAP (fractions) of exact search, the evaluation's protocol (same pid and camera dropped)."""
    from torchreid_privacy.metrics.ranking import rank_metrics_features

    m = rank_metrics_features(torch.from_numpy(qf), torch.from_numpy(gf), q_pids, g_pids, q_cams, g_cams)
    return {"R1": m["R1"], "mAP": m["mAP"]}


def _layouts(crops: RunCrops) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """The query rows (plain crops of query images) and each checked layout's gallery rows."""
    q = crops.is_query & (crops.crop == 0)
    return q, {"test": ~crops.is_query & (crops.crop == 0), "crops": ~crops.is_query}


def _real_metrics(crops: RunCrops, g: np.ndarray) -> Dict[str, float]:
    """Exact-search R1/mAP of C's real features on the crops' layout (query rows, gallery ``g``)."""
    q, _ = _layouts(crops)
    return exact_metrics(l2n(crops.o[q]), l2n(crops.o[g]), crops.pids[q], crops.pids[g], crops.cams[q], crops.cams[g])


def _drawn_metrics(crops: RunCrops, model: FeatureModel, g: np.ndarray, seed: int) -> Dict[str, float]:
    """Exact-search R1/mAP of features drawn from ``model`` on the crops' layout (query rows, gallery ``g``)."""
    rng = np.random.default_rng(seed)
    ids, pid_row = np.unique(crops.pids, return_inverse=True)
    q, _ = _layouts(crops)
    fo = model.sample(pid_row, crops.cams - crops.cams.min(), model.identity_means(len(ids), rng), rng)
    return exact_metrics(fo[q], fo[g], crops.pids[q], crops.pids[g], crops.cams[q], crops.cams[g])


def calibrate(crops: RunCrops, model: FeatureModel, seed: int = 0, draws: int = CALIBRATION_DRAWS,
              steps: int = 14) -> FeatureModel:
    """``model`` with its per-image spread scaled so that drawn features' exact-search mAP on the
    run's test layout (mean of ``draws`` draws) is the real features' mAP.

    Why: Gaussian identities are easier to tell apart than C's real ones at the same second moments
    (on the quickstart run: mAP 0.87 against 0.755), since real look-alike identities and views are
    not Gaussian; one scale, found by bisection, absorbs that. The other layout (``crops``) is not
    used here and checks the result."""
    g = _layouts(crops)[1]["test"]
    target = _real_metrics(crops, g)["mAP"]

    def drawn_map(scale: float) -> float:
        m = model.with_within_scale(scale)
        return float(np.mean([_drawn_metrics(crops, m, g, seed + 1000 + i)["mAP"] for i in range(draws)]))

    lo, hi = 0.25, 4.0  # mAP falls as the spread grows
    for _ in range(steps):
        mid = float(np.sqrt(lo * hi))
        lo, hi = (mid, hi) if drawn_map(mid) > target else (lo, mid)
    return model.with_within_scale(float(np.sqrt(lo * hi)))


def validate(crops: RunCrops, model: FeatureModel, seed: int = 0) -> Dict[str, Dict[str, Any]]:
    """Exact-search R1/mAP of the real features and of features drawn from ``model`` on the same layout
    (same identities' image counts and cameras, new identities drawn for them):

    - ``test``: the run's query and gallery images, plain crops (its own O->O test, persons only);
    - ``crops``: plain query crops against every crop of the gallery images (a gallery of
      ``crops_per_image`` times as many images per identity).
    """
    q, layouts = _layouts(crops)
    out: Dict[str, Dict[str, Any]] = {}
    for name, g in layouts.items():
        real = _real_metrics(crops, g)
        drawn = _drawn_metrics(crops, model, g, seed)
        out[name] = {"queries": int(q.sum()), "gallery": int(g.sum()), "identities": int(len(np.unique(crops.pids))),
                     "real": real, "generated": drawn}
    return out


@torch.no_grad()
def check_identities(run_path: str, model: FeatureModel, data_root: str, counts: Sequence[int] = (50, 200),
                     seed: int = 0, draws: int = 3, batch_size: int = 256) -> List[Dict[str, Any]]:
    """Real against drawn exact-search R1/mAP at more identities than the fit saw: the run's C on the
    test split of its dataset under another ``data_root`` (e.g. ``make-data --ids 1500``: 750 test
    identities), plain images; ``counts`` identities drawn from it, and all of them.

    Why: a million-image gallery holds 100,000 identities, the fit 50; whether R1/mAP fall with the
    number of identities as the real features' do is what makes the drawn gallery ReID-like."""
    from torchreid_privacy import bridge
    from torchreid_privacy.trained_run import TrainedRun

    if not os.path.isdir(data_root):
        raise FileNotFoundError(f"--check-root: not a folder: {data_root}")
    run = TrainedRun.open(run_path, overrides=["data.root", str(data_root)])
    _, items = person_images(run)
    m = run.model.eval()
    tf = plain(m.height, m.width)
    feats = [m.features(torch.stack([tf(bridge.read_image(p)) for p, *_ in items[i:i + batch_size]])
                        .to(m.device)).cpu() for i in range(0, len(items), batch_size)]
    f = l2n(torch.cat(feats).numpy())
    pids, cams = np.array([r[1] for r in items]), np.array([r[2] for r in items])
    is_query = np.array([r[3] for r in items])
    ids, pid_row = np.unique(pids, return_inverse=True)
    rng = np.random.default_rng(seed)
    out = []
    for n in sorted({min(int(c), len(ids)) for c in counts} | {len(ids)}):
        sel = np.isin(pids, rng.choice(ids, n, replace=False))
        q, g = sel & is_query, sel & ~is_query
        real = exact_metrics(f[q], f[g], pids[q], pids[g], cams[q], cams[g])
        drawn = []
        for i in range(draws):
            r = np.random.default_rng(seed + 2000 + i)
            fo = model.sample(pid_row, cams - cams.min(), model.identity_means(len(ids), r), r)
            drawn.append(exact_metrics(fo[q], fo[g], pids[q], pids[g], cams[q], cams[g]))
        out.append({"identities": n, "queries": int(q.sum()), "gallery": int(g.sum()), "real": real,
                    "generated": {k: float(np.mean([d[k] for d in drawn])) for k in ("R1", "mAP")}})
    return out


def fit_run(run_path: str, crops_per_image: int = CROPS_PER_IMAGE, seed: int = 0,
            target: Optional[str] = None, calibrated: bool = True,
            check_root: Optional[str] = None) -> Tuple[FeatureModel, Dict[str, Any]]:
    """Embed the run's crops, fit the generator (``calibrated``: its spread scaled to the real
    test-layout mAP, :func:`calibrate`), check it; the report says how long embedding a million
    crops would have taken at the measured speed."""
    t0 = time.perf_counter()
    crops = embed_run_crops(run_path, crops_per_image, seed=seed, target=target)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    report: Dict[str, Any] = {
        "run": crops.run, "target": crops.target, "crops": int(len(crops.o)), "crops_per_image": crops_per_image,
        "identities": int(len(np.unique(crops.pids))), "dim": int(crops.o.shape[1]),
        "embed_crops_per_s": crops.crops_per_s, "million_crops_s": MILLION / crops.crops_per_s,
        "million_crops_with_p_s": MILLION * (crops.seconds_o + crops.seconds_p) / max(len(crops.o), 1),
        "threads": torch.get_num_threads(), "load_1min": load}
    cams = crops.cams - crops.cams.min()
    model = fit(crops.o, crops.pids, cams, crops.p, image=crops.image, plain=crops.crop == 0,
                info={k: report[k] for k in ("run", "target", "crops_per_image")})
    if calibrated:
        model = calibrate(crops, model, seed=seed)
    report["within_scale"] = float(model.info.get("within_scale", 1.0))
    report["check"] = validate(crops, model, seed=seed)
    if check_root:
        report["check_identities"] = check_identities(run_path, model, check_root, seed=seed)
    report["fit_s"] = time.perf_counter() - t0
    model.info["report"] = report
    return model, report


def report_lines(report: Dict[str, Any]) -> Sequence[str]:
    """What ``bench scale`` prints about the fit."""
    r = report
    lines = [f"features from {r['run']} ({r['target']}): {r['crops']} crops ({r['crops_per_image']} per image) of "
             f"{r['identities']} test identities, {r['dim']}-d, embedded at {r['embed_crops_per_s']:.0f} crops/s "
             f"({r['threads']} threads, load {r['load_1min']:.1f}): a million crops would take "
             f"{r['million_crops_s'] / 60:.0f} min ({r.get('million_crops_with_p_s', float('nan')) / 60:.0f} min "
             f"with their P); per-image spread scaled x{r['within_scale']:.3f} to the real test-layout mAP"]
    for name, c in r.get("check", {}).items():
        lines.append(f"  exact search, {name} layout ({c['queries']} queries x {c['gallery']} gallery, "
                     f"{c['identities']} ids): real R1 {100 * c['real']['R1']:.1f} mAP {100 * c['real']['mAP']:.1f}"
                     f" | generated R1 {100 * c['generated']['R1']:.1f} mAP {100 * c['generated']['mAP']:.1f}")
    for c in r.get("check_identities", []):
        lines.append(f"  exact search, more identities ({c['queries']} queries x {c['gallery']} gallery, "
                     f"{c['identities']} ids, plain images): real R1 {100 * c['real']['R1']:.1f} mAP "
                     f"{100 * c['real']['mAP']:.1f} | generated R1 {100 * c['generated']['R1']:.1f} mAP "
                     f"{100 * c['generated']['mAP']:.1f}")
    return lines
