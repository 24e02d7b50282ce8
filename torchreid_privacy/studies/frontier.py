"""``torchreid-privacy frontier``: the privacy-utility frontier, measured on P as published, over seeds.

Why: a single run cannot carry a privacy claim (the same demo on two CPUs differed by up to 6
rank-1 points), and a learned P is only worth its complexity where it beats the conventional M it
imitates. So every point is trained and attacked on several seeds, and the conventional
desensitizers are swept over their strengths to draw M's curve, the yardstick:

- conventional points: a ``baseline`` run (C on O and M) per strength; P = M as published;
- learned points: the named variants of :data:`LEARNED_VARIANTS` on the config's desensitizer.

Each point and seed reports, all on P as published (``privacy.publish``): rank-1 O->O, O->P,
P->O, P->P and the ratios O->P/O->O and P->P/O->O (utility), the float P's rank-1 beside them,
PSNR(O, P), the inversion attacker's PSNR (``metrics.inversion``: trained on 256 leaked pairs and
on all training pairs of published P, scored on the test split) and the O->P rank-1 of a
third party's model trained on raw images only (one per seed, shared by every point). Results:
``frontier.json`` (every seed), ``frontier.csv`` (mean and sd per point) and ``frontier.png``
(``frontier_plot``).

A full sweep takes about an hour on 2 cores, so each finished job leaves its result beside its run
(``point.json``, ``third_party.json``, ``third_party_eval.json``) and ``--resume`` picks the sweep
up where it stopped, with the same arguments and the same config file content
(``frontier_args.json`` records the file's sha256: a config edited since is refused, naming it); a
job that was cut off is moved aside (``FOLDER.incomplete-N``) and run again. A result file that is not
valid JSON is an error naming it.

Strengths are given at the paper's 256x128 and scaled to ``data.height`` (mosaic block 24 is 6
at 64x32); noise sigmas are not scaled.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

log = logging.getLogger(__name__)

REFERENCE_HEIGHT = 256  # strengths are stated at the paper's 256x128
# family -> (parameter, strengths at 256x128, scaled with data.height)
STRENGTHS: Dict[str, Tuple[str, Tuple[float, ...], bool]] = {
    "mosaic": ("block", (8, 12, 16, 24, 32), True),
    "blur": ("radius", (4, 8, 12, 16), True),
    "noise": ("sigma", (0.1, 0.3, 0.5), False),
}
QUICK_STRENGTHS = {"mosaic": (24,), "blur": (12,)}
# the sweep's conventional points unless --conventional names others: each family's curve, in 45
# minutes a set on 2 cores with the default learned variants (measured per job at 500 queries: a
# conventional point 60 s, a learned one 100-130 s, the third party's score 5 s; all 12 strengths
# would take about 58 minutes)
DEFAULT_STRENGTHS = {"mosaic": (8, 16, 24, 32), "blur": (8, 16), "noise": (0.3,)}

# the learned variants: overrides on top of the config (its desensitizer is their M)
SEALED = ["privacy.recovery", "sealed"]
LEARNED_VARIANTS: Dict[str, List[str]] = {
    # the paper's method (learned recovery G_R), trained through the publication channel
    "progressive": ["privacy.mode", "progressive"],
    # the demo's sealed run: a U-Net G with the in-training inversion adversary
    "progressive-sealed": ["privacy.mode", "progressive", *SEALED, "privacy.inversion.enabled", "true"],
    # ... plus the inversion gate on the supervision upgrade
    "progressive-sealed-gated": ["privacy.mode", "progressive", *SEALED, "privacy.inversion.enabled", "true",
                                 "privacy.upgrade.inversion_gate.enabled", "true"],
    # M plus a bounded residual carrying only a quantized identity code (plugins/residual_code.py),
    # written into JPEG's DC terms (constant on 8x8 cells, at full amplitude from the start), a
    # reader trained on P as published (decode), no GAN term. (Its predecessor residual-sealed,
    # a smooth pattern under the GAN term, is gone: G kept the residual near zero, so P was M:
    # 0.76 / 0.91 against mosaic 24's 0.76 / 0.92, 3 seeds at ec21461.)
    "residual-blocks": ["privacy.mode", "joint", *SEALED, "privacy.generator.name", "residual_code",
                        "privacy.generator.num_downs", "null", "privacy.generator.params",
                        '{"code_size": 32, "code_levels": 4, "bound": 0.15, "render": "blocks", "reader": true}',
                        "privacy.weights.rec_p", "0", "privacy.weights.gan", "0", "privacy.weights.code", "1",
                        "privacy.weights.decode", "1", "privacy.weights.cross", "1"],
    # a mosaic on M's grid whose block colours G chooses (plugins/learned_mosaic.py): P has as many
    # free values as M; no L1 pull towards M and no GAN term (the bound keeps it M-like):
    # configs/quickstart_sealed.yaml, the recommended sealed run
    "learned-mosaic": ["privacy.mode", "joint", *SEALED, "privacy.generator.name", "learned_mosaic",
                       "privacy.generator.num_downs", "null", "privacy.generator.params", '{"bound": 0.25}',
                       "privacy.weights.rec_p", "0", "privacy.weights.gan", "0", "privacy.weights.cross", "1"],
}
SHIPPED_SEALED = "learned-mosaic"  # the variant configs/quickstart_sealed.yaml trains
# the sweep's learned points unless --variants names others: the paper's method, the code channel
# and the shipped sealed config (the U-Net sealed variants leak 1-2 dB more than M: measured at
# ec21461, docs/results.md)
DEFAULT_VARIANTS = ("progressive", "residual-blocks", SHIPPED_SEALED)
QUICK_VARIANTS = (SHIPPED_SEALED,)
HIT_SETTINGS = ("O->O", "O->P", "P->P")  # stored per query ("0110..."): the paired intervals' input
YARDSTICK = "mosaic-24"  # the conventional point every other point is compared with, query by query
ATTACK_PAIRS = 256
ATTACK_STEPS, QUICK_ATTACK_STEPS = 300, 60
THIRD_PARTY_EPOCHS = 10
METRICS = ("o_o", "o_p", "p_o", "p_p", "o_p_rel", "p_p_rel", "o_p_float", "p_o_float", "p_p_float", "psnr_o_p",
           "inversion_256", "inversion_all", "third_party_o_o", "third_party_o_p")


@dataclass
class Point:
    """One point of the frontier: a conventional strength or a learned variant."""

    name: str
    kind: str  # conventional | learned
    family: str
    overrides: List[str]
    strength: Optional[float] = None
    params: Dict[str, Any] = field(default_factory=dict)


def conventional_points(height: int, strengths: Dict[str, Sequence[float]]) -> List[Point]:
    """Baseline runs on each desensitizer strength, scaled from 256x128 to ``height``."""
    points = []
    for family, values in strengths.items():
        param, _, scaled = STRENGTHS[family]
        for s in values:
            value: Any = s * height / REFERENCE_HEIGHT if scaled else s
            value = max(1, int(round(value))) if param == "block" else round(float(value), 4)
            points.append(Point(f"{family}-{s:g}", "conventional", family,
                                ["privacy.mode", "baseline", "privacy.desensitizer.name", family,
                                 "privacy.desensitizer.params", json.dumps({param: value})],
                                strength=float(s), params={param: value}))
    return points


def parse_conventional(names: Sequence[str]) -> Dict[str, List[float]]:
    """``["mosaic-24", "blur-12"]`` -> ``{"mosaic": [24.0], "blur": [12.0]}`` (strengths at 256x128)."""
    out: Dict[str, List[float]] = {}
    for name in names:
        family, _, value = name.rpartition("-")
        try:
            strength = float(value)
        except ValueError:
            strength = -1.0
        if family not in STRENGTHS or not strength > 0 or not math.isfinite(strength):
            raise ValueError(f"--conventional: expected FAMILY-STRENGTH with FAMILY one of {', '.join(STRENGTHS)} "
                             f"and a positive strength at 256x128 (e.g. mosaic-24), got {name!r}")
        out.setdefault(family, []).append(strength)
    return out


def learned_points(names: Sequence[str], desensitizer: str) -> List[Point]:
    unknown = [n for n in names if n not in LEARNED_VARIANTS]
    if unknown:
        raise ValueError(f"--variants: unknown variant '{unknown[0]}' ({', '.join(LEARNED_VARIANTS)})")
    return [Point(n, "learned", desensitizer, list(LEARNED_VARIANTS[n])) for n in names]


# ------------------------------------------------------------------------------------------ one job
@dataclass
class Job:
    """A unit of work for a worker process: train a point (or the third party) for one seed."""

    what: str  # point | third_party | third_party_eval
    seed: int
    config_file: str
    overrides: List[str]
    folder: str
    threads: int
    point: Optional[Point] = None
    attack_steps: int = ATTACK_STEPS
    third_party_epochs: int = THIRD_PARTY_EPOCHS
    third_party: str = ""  # the seed's third-party weights (third_party_eval)


@contextlib.contextmanager
def _quiet(log_path: str):
    """Send a job's prints and logs (torchreid's dataset tables, training logs) to its own log file."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    root = logging.getLogger()
    with open(log_path, "a", encoding="utf-8") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        saved, level = root.handlers[:], root.level
        root.handlers, root.level = [handler], logging.INFO
        try:
            yield
        finally:
            root.handlers, root.level = saved, level


def _config(job: Job, save_dir: str, extra: Sequence[str] = ()):
    from torchreid_privacy.config import load_config

    return load_config(job.config_file, [*job.overrides, *extra, "data.save_dir", save_dir,
                                         "train.seed", str(job.seed), "privacy.seed", str(job.seed)])


def run_job(job: Job) -> Dict[str, Any]:
    """Run one job (in a worker process or in-process) and return its JSON-able result."""
    import torch

    torch.set_num_threads(job.threads)
    with _quiet(os.path.join(job.folder, "log.txt")):
        if job.what == "third_party":
            return _train_third_party(job)
        if job.what == "third_party_eval":
            return _third_party_eval(job)
        return _train_point(job)


def _train_point(job: Job) -> Dict[str, Any]:
    from torchreid_privacy.builder import build_privacy_engine
    from torchreid_privacy.trained_run import TrainedRun

    cfg = _config(job, job.folder, [*job.point.overrides, "privacy.tensorboard_views", "false"])
    t0 = time.time()
    engine = build_privacy_engine(cfg)
    engine.evaluator.per_query = True  # the test's rank-1 hit per query, for the paired intervals
    results = engine.run_privacy(save_dir=job.folder, max_epoch=cfg.train.max_epoch)
    target = next(iter(results["test"]))
    test = results["test"][target]
    rank, raw = test["rank"], test["rank_unpublished"]
    o_o = rank["O->O"]["R1"]
    out = {"seed": job.seed, "run": job.folder, "target": target, "train_seconds": round(time.time() - t0, 1),
           "o_o": o_o, "o_p": rank["O->P"]["R1"], "p_o": rank["P->O"]["R1"], "p_p": rank["P->P"]["R1"],
           "o_p_rel": rank["O->P"]["R1"] / o_o if o_o else 0.0, "p_p_rel": rank["P->P"]["R1"] / o_o if o_o else 0.0,
           "o_p_float": raw["O->P"]["R1"], "p_o_float": raw["P->O"]["R1"], "p_p_float": raw["P->P"]["R1"],
           "psnr_o_p": test["image"]["O-P"]["psnr"], "upgrades": len(results["upgrades"]),
           "hits": {k: "".join(map(str, test["hits"][k])) for k in HIT_SETTINGS}}
    t1 = time.time()
    run = TrainedRun.open(job.folder)
    out.update(_inversion(job, run))
    out["attack_seconds"] = round(time.time() - t1, 1)
    out.update(_code_readback(run))
    return out


def _code_readback(run: Any) -> Dict[str, Any]:
    """For a G whose code a reader reads back (``residual_code`` with ``reader``): the share of the
    code's symbols read back from the test images' P as published, and the bits that makes."""
    import torch

    from torchreid_privacy.plugins.residual_code import code_readback
    from torchreid_privacy.utils.images import to_gan

    gen = run.model.generator
    if gen is None or getattr(gen, "reader", None) is None:
        return {}
    gen.eval()
    read, count = 0.0, 0
    with torch.no_grad():
        for o01 in run.eval_batches01(run.test_targets[0]):
            res = code_readback(gen, to_gan(o01), to_gan(run.model.publish(run.model.anonymize(o01))))
            read, count = read + res["symbols_read"] * len(o01), count + len(o01)
    return {"code_bits_written": gen.code_bits, "code_bits_read": read / count * gen.code_bits}


def _inversion(job: Job, run: Any) -> Dict[str, Any]:
    """The attacker's PSNR at 256 leaked pairs and at all training pairs of published P."""
    from torchreid_privacy.attacks.recover import evaluate_attackers, leaked_pairs
    from torchreid_privacy.metrics.inversion import build_attacker, train_attacker

    total = len(run.train_items())
    p01, _, o01 = leaked_pairs(run, total, seed=job.seed)
    nets = {}
    for label, n in (("inversion_256", min(ATTACK_PAIRS, total)), ("inversion_all", total)):
        net = build_attacker(run.config, job.seed).to(run.device)
        nets[label], _ = train_attacker(net, p01[:n], o01[:n], job.attack_steps, 16, job.seed)
    scores = evaluate_attackers(run, nets, run.test_targets[0], seed=job.seed)
    return {**{k: v["psnr"] for k, v in scores.items()}, "attack_pairs_all": total}


def _train_third_party(job: Job) -> Dict[str, Any]:
    from torchreid_privacy.attacks.reid import third_party_config, train_third_party

    cfg = _config(job, job.folder)
    tp = third_party_config(cfg, job.folder, max_epoch=job.third_party_epochs)
    return {"seed": job.seed, "weights": train_third_party(tp)}


def _third_party_eval(job: Job) -> Dict[str, Any]:
    from torchreid_privacy.trained_run import TrainedRun
    from torchreid_privacy.utils.weights import load_backbone_weights

    run = TrainedRun.open(job.folder)
    load_backbone_weights(run.model.reid, job.third_party, what="third-party model", features_only=True)
    res = run.evaluate(run.test_targets[0], desc="third party", settings=("O->O", "O->P"))
    return {"third_party_o_o": res["rank"]["O->O"]["R1"], "third_party_o_p": res["rank"]["O->P"]["R1"]}


# ------------------------------------------------------------------------------------------ the sweep
def _mean_sd(values: List[float]) -> Tuple[float, float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def pareto(points: List[Dict[str, Any]], x: str, y: str) -> List[str]:
    """Names of the points no other point beats on both axes (higher ``x``, lower ``y``; means)."""
    front = []
    for p in points:
        px, py = p["mean"][x], p["mean"][y]
        dominated = any(q["mean"][x] >= px and q["mean"][y] <= py and (q["mean"][x] > px or q["mean"][y] < py)
                        for q in points if q is not p)
        if not dominated:
            front.append(p["name"])
    return front


ARGS_FILE = "frontier_args.json"


def read_json(path: str, what: str = "") -> Any:
    """A JSON file's content; a file that is not valid JSON is a one-line error naming it."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"{path}: not valid JSON ({exc}){what}") from None
    except RecursionError:
        raise ValueError(f"{path}: not valid JSON (nested too deeply){what}") from None


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def sweep_args(config_file: str, overrides: Sequence[str] = (), seeds: int = 3, quick: bool = False,
               variants: Optional[Sequence[str]] = None, dataset: Optional[str] = None,
               data_root: Optional[str] = None, conventional: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """What identifies a sweep (``frontier_args.json``): its arguments and the config file's content."""
    args = {"config": os.path.abspath(config_file), "config_sha256": file_sha256(config_file),
            "overrides": list(overrides), "seeds": seeds, "quick": quick,
            "variants": None if variants is None else list(variants), "dataset": dataset,
            "data_root": None if data_root is None else os.path.abspath(data_root)}
    if conventional is not None:  # absent for the full sweep, so sweeps saved before the flag resume
        args["conventional"] = list(conventional)
    return args


def check_output(output: str, args: Dict[str, Any], resume: bool) -> None:
    """A new sweep needs a new (or empty) folder; ``--resume`` needs the folder of the same sweep."""
    used = os.path.exists(output) and (not os.path.isdir(output) or bool(os.listdir(output)))
    saved_path = os.path.join(output, ARGS_FILE)
    if not resume:
        if used:
            hint = " or add --resume to finish the sweep started there" if os.path.isfile(saved_path) else ""
            raise ValueError(f"--output: {output} exists and is not an empty folder; choose a new one{hint}")
        return
    if not used:
        return  # nothing to resume: a fresh sweep
    if not os.path.isfile(saved_path):
        raise ValueError(f"--resume: {output} holds no {ARGS_FILE}; it is not a frontier folder")
    saved = read_json(saved_path, "; it records the sweep's arguments: choose a new --output")
    if not isinstance(saved, dict):
        raise ValueError(f"{saved_path}: expected a JSON object (the sweep's arguments), got "
                         f"{type(saved).__name__}; choose a new --output")
    for key in sorted(set(saved) | set(args)):
        if key == "config_sha256" and saved.get(key) != args.get(key) and saved.get("config") == args.get("config"):
            then = f"sha256 {str(saved[key])[:12]}... then" if saved.get(key) else "no sha256 recorded (an older sweep)"
            now = f"{str(args[key])[:12]}... now" if args.get(key) else "none now"
            raise ValueError(f"--resume: the config file {args.get('config')} changed since the sweep in {output} "
                             f"started ({then}, {now}); its finished runs were trained with the old settings: "
                             "restore the file or choose a new --output")
        if saved.get(key) != args.get(key):
            raise ValueError(f"--resume: {output} was started with {key}={saved.get(key)!r}, not {args.get(key)!r}; "
                             "resume with the same arguments or choose a new --output")


def check_config(config_file: str) -> None:
    from torchreid_privacy.config import load_yaml

    if not config_file:
        raise ValueError("--config-file: required (a torchreid YAML with a privacy: section, e.g. the quickstart)")
    if "privacy" not in (load_yaml(config_file) or {}):
        raise ValueError(f"--config-file: {config_file} has no privacy: section; the frontier compares privacy "
                         "runs (add privacy: {enabled: true} and a desensitizer)")


def run_frontier(config_file: str, output: str, seeds: int = 3, overrides: Sequence[str] = (),
                 quick: bool = False, variants: Optional[Sequence[str]] = None, jobs: Optional[int] = 1,
                 dataset: Optional[str] = None, data_root: Optional[str] = None,
                 resume: bool = False, conventional: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Train, attack and score every point on ``seeds`` seeds; write ``frontier.json/.csv/.png``.
    ``conventional`` names the conventional points (e.g. ``["mosaic-24", "blur-12"]``; default
    :data:`DEFAULT_STRENGTHS`, or mosaic 24 and blur 12 with ``quick``; any strength of
    :data:`STRENGTHS`' families by name)."""
    from torchreid_privacy.config import load_config
    from torchreid_privacy.studies.frontier_plot import plot_frontier
    from torchreid_privacy.utils import atomic

    check_config(config_file)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds: expected an integer >= 1, got {seeds!r}")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"--jobs: expected an integer >= 1, got {jobs!r}")
    strengths = (parse_conventional(conventional) if conventional is not None else
                 QUICK_STRENGTHS if quick else DEFAULT_STRENGTHS)
    args = sweep_args(config_file, overrides, seeds, quick, variants, dataset, data_root, conventional)
    check_output(output, args, resume)
    seeds = 1 if quick else seeds
    base = list(overrides) + ["privacy.enabled", "true", "data.root", data_root or os.path.join(output, "data")]
    if dataset:
        base += ["data.sources", f"[{dataset}]", "data.targets", f"[{dataset}]"]
    cfg = load_config(config_file, base)  # a bad override fails here, before any training
    points = conventional_points(cfg.data.height, strengths)
    points += learned_points(variants if variants is not None else (QUICK_VARIANTS if quick else DEFAULT_VARIANTS),
                             cfg.privacy.desensitizer.name)
    os.makedirs(output, exist_ok=True)
    atomic.write_json(os.path.join(output, ARGS_FILE), args)
    jobs = jobs or 1
    threads = max(1, (os.cpu_count() or 1) // jobs)
    steps = QUICK_ATTACK_STEPS if quick else ATTACK_STEPS
    first_seed = int(cfg.privacy.seed)
    seed_list = [first_seed + k for k in range(seeds)]
    t0 = time.time()
    # quick: the third party trains as long as the runs (tests shrink train.max_epoch)
    tp_epochs = min(THIRD_PARTY_EPOCHS, int(cfg.train.max_epoch)) if quick else THIRD_PARTY_EPOCHS
    common = dict(config_file=config_file, overrides=base, threads=threads, attack_steps=steps,
                  third_party_epochs=tp_epochs)
    train_jobs = [Job("third_party", s, folder=os.path.join(output, "third_party", f"seed{s}"), **common)
                  for s in seed_list]
    train_jobs += [Job("point", s, folder=os.path.join(output, "runs", p.name, f"seed{s}"), point=p, **common)
                   for p in points for s in seed_list]
    done = _run_all(train_jobs, jobs, "frontier: train + attack")
    weights = {j.seed: done[i]["weights"] for i, j in enumerate(train_jobs) if j.what == "third_party"}
    evals = [Job("third_party_eval", j.seed, folder=j.folder, third_party=weights[j.seed], **common)
             for j in train_jobs if j.what == "point"]
    scored = _run_all(evals, jobs, "frontier: third party")
    rows: Dict[str, List[Dict[str, Any]]] = {p.name: [] for p in points}
    point_jobs = [(i, j) for i, j in enumerate(train_jobs) if j.what == "point"]
    for (i, job), extra in zip(point_jobs, scored):
        rows[job.point.name].append({**done[i], **extra})
    table = []
    for p in points:
        entry = {**asdict(p), "runs": rows[p.name], "mean": {}, "sd": {}}
        entry.pop("overrides")
        for metric in METRICS:
            entry["mean"][metric], entry["sd"][metric] = _mean_sd([r[metric] for r in rows[p.name]])
        if rows[p.name] and all("code_bits_read" in r for r in rows[p.name]):  # a G whose code is read back
            entry["code_bits"] = {"written": rows[p.name][0]["code_bits_written"],
                                  "read": _mean_sd([r["code_bits_read"] for r in rows[p.name]])[0]}
        table.append(entry)
    add_intervals(table)
    result = {"config": os.path.abspath(config_file), "overrides": list(overrides), "dataset": dataset or
              cfg.data.sources[0], "height": cfg.data.height, "width": cfg.data.width, "seeds": seed_list,
              "quick": quick, "publish": {"format": cfg.privacy.publish.format, "quality": cfg.privacy.publish.quality},
              "attack": {"steps": steps, "pairs": [ATTACK_PAIRS, "all"], "third_party_epochs": tp_epochs},
              "points": table,
              "pareto": {"inversion": pareto(table, "o_p_rel", "inversion_256"),
                         "third_party": pareto(table, "o_p_rel", "third_party_o_p")},
              "seconds": round(time.time() - t0, 1)}
    atomic.write_json(os.path.join(output, "frontier.json"), result)
    write_csv(os.path.join(output, "frontier.csv"), table)
    plot_frontier(result, os.path.join(output, "frontier.png"))
    return result


def _hit_runs(entry: Dict[str, Any]) -> Optional[List[Dict[str, List[int]]]]:
    """A point's per-seed hits as 0/1 lists, or None when a run has none (a sweep saved before them)."""
    if not all(isinstance(r.get("hits"), dict) for r in entry["runs"]):
        return None
    return [{k: [1 if c == "1" else 0 for c in v] for k, v in r["hits"].items()} for r in entry["runs"]]


def add_intervals(table: List[Dict[str, Any]]) -> None:
    """Per point: ``ci95`` (pooled rank-1 and ratios with their 95% bootstrap interval over queries
    and seeds) and, against the yardstick (mosaic 24), ``vs_yardstick``: the paired difference and
    its interval (same seeds, same queries)."""
    from torchreid_privacy.studies.paired import intervals, paired_differences

    hits = {p["name"]: _hit_runs(p) for p in table}
    ref = hits.get(YARDSTICK)
    for p in table:
        if hits[p["name"]] is None:
            continue
        p["ci95"] = intervals(hits[p["name"]])
        if ref is not None and p["name"] != YARDSTICK and len(ref) == len(hits[p["name"]]):
            p["vs_yardstick"] = {"yardstick": YARDSTICK, **paired_differences(hits[p["name"]], ref)}


def _result_path(job: Job) -> str:
    return os.path.join(job.folder, f"{job.what}.json")


def _finished(job: Job) -> Optional[Dict[str, Any]]:
    """A job's saved result, or None; a training job cut off before it finished is moved aside."""
    path = _result_path(job)
    if os.path.isfile(path):
        again = "; delete it to run that job again with --resume"
        result = read_json(path, again)
        if not isinstance(result, dict) or (job.what == "third_party" and not isinstance(result.get("weights"), str)):
            raise ValueError(f"{path}: not a finished job's result (a JSON object"
                             f"{' with the weights path' if job.what == 'third_party' else ''}){again}")
        return result
    if job.what != "third_party_eval" and os.path.exists(job.folder):
        n = 1
        while os.path.exists(f"{job.folder}.incomplete-{n}"):
            n += 1
        os.replace(job.folder, f"{job.folder}.incomplete-{n}")
        log.warning("frontier: %s was cut off; moved aside to %s.incomplete-%d and run again", job.folder,
                    job.folder, n)
    return None


def _save(job: Job, result: Dict[str, Any]) -> Dict[str, Any]:
    from torchreid_privacy.utils import atomic

    atomic.write_json(_result_path(job), result)
    return result


def _run_all(jobs_: List[Job], workers: int, desc: str) -> List[Dict[str, Any]]:
    """Results in ``jobs_`` order (saved ones reused); ``workers`` > 1 runs them in that many processes."""
    out: List[Optional[Dict[str, Any]]] = [_finished(job) for job in jobs_]
    todo = [i for i, r in enumerate(out) if r is None]
    with tqdm(total=len(jobs_), initial=len(jobs_) - len(todo), desc=desc, unit="job", disable=None,
              dynamic_ncols=True, file=sys.stderr) as bar:
        if workers == 1:
            for i in todo:
                out[i] = _save(jobs_[i], run_job(jobs_[i]))
                bar.update(1)
        else:
            import multiprocessing

            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(run_job, jobs_[i]): i for i in todo}
                for fut in as_completed(futures):
                    i = futures[fut]
                    out[i] = _save(jobs_[i], fut.result())
                    bar.update(1)
    return out  # type: ignore[return-value]


def write_csv(path: str, table: List[Dict[str, Any]]) -> None:
    """One row per point: its identity, then ``METRIC_mean`` and ``METRIC_sd`` for every metric,
    then the pooled utility metrics with their 95% interval (``_lo``/``_hi``) and the paired
    difference to the yardstick (``vs_mosaic24_...``); empty where a point has no per-query hits."""
    import io

    from torchreid_privacy.studies.paired import PAIRED_METRICS
    from torchreid_privacy.utils.atomic import write_bytes

    def ci_cells(p: Dict[str, Any]) -> List[str]:
        cells = []
        for key, value in (("ci95", "value"), ("vs_yardstick", "diff")):
            for m in PAIRED_METRICS:
                c = p.get(key, {}).get(m)
                cells += ["", "", ""] if c is None else [f"{c[value]:.4f}", f"{c['ci95'][0]:.4f}", f"{c['ci95'][1]:.4f}"]
        return cells

    buf = io.StringIO()
    w = csv.writer(buf)
    vs = YARDSTICK.replace("-", "")
    w.writerow(["name", "kind", "family", "strength", "params", "seeds"]
               + [f"{m}_{s}" for m in METRICS for s in ("mean", "sd")]
               + [f"{m}_{s}" for m in PAIRED_METRICS for s in ("pooled", "lo", "hi")]
               + [f"vs_{vs}_{m}_{s}" for m in PAIRED_METRICS for s in ("diff", "lo", "hi")])
    for p in table:
        w.writerow([p["name"], p["kind"], p["family"], "" if p["strength"] is None else f"{p['strength']:g}",
                    json.dumps(p["params"]), len(p["runs"])]
                   + [f"{p[s][m]:.4f}" for m in METRICS for s in ("mean", "sd")] + ci_cells(p))
    write_bytes(path, buf.getvalue().encode("utf-8"))


def format_frontier(result: Dict[str, Any]) -> str:
    """The frontier as a table: mean +- sd over seeds per point (rank-1 in %, PSNR in dB)."""
    from torchreid_privacy.studies.report import text_table

    n = len(result["seeds"])
    head = ["point", "O->O", "O->P", "P->P", "O->P/O->O", "P->P/O->O", "inversion@256", "inversion@all",
            "3rd-party O->P", "PSNR(O,P)"]
    cols = [("o_o", 100, 1), ("o_p", 100, 1), ("p_p", 100, 1), ("o_p_rel", 1, 2), ("p_p_rel", 1, 2),
            ("inversion_256", 1, 2), ("inversion_all", 1, 2), ("third_party_o_p", 100, 1), ("psnr_o_p", 1, 2)]
    rows = []
    front = set(result["pareto"]["inversion"])
    for p in result["points"]:
        cells = [p["name"] + (" *" if p["name"] in front else "")]
        for m, scale, digits in cols:
            cells.append(f"{scale * p['mean'][m]:.{digits}f}" + (f"+-{scale * p['sd'][m]:.{digits}f}" if n > 1 else ""))
        rows.append(cells)
    lines = text_table(head, rows).split("\n")
    lines.append(f"mean{' +- sd' if n > 1 else ''} over seeds {result['seeds']}; P as published "
                 f"({result['publish']['format']} {result['publish']['quality']}); * = on the inversion/utility "
                 f"Pareto front; {result['seconds']:.0f} s")
    paired = format_intervals(result)
    codes = [f"{p['name']}: the code read back from P as published, {p['code_bits']['read']:.1f} of "
             f"{p['code_bits']['written']:.0f} bits (test images, mean over seeds)"
             for p in result["points"] if "code_bits" in p]
    return "\n".join(lines + ([""] + paired if paired else []) + codes)


INTERVAL_COLUMNS = (("o_p_rel", "O->P/O->O"), ("p_p_rel", "P->P/O->O"))


def format_intervals(result: Dict[str, Any]) -> List[str]:
    """Per point, the utility ratios with their 95% interval and the paired difference to the
    yardstick with its interval (queries x seeds bootstrap); [] when no point has per-query hits."""
    from torchreid_privacy.studies.report import text_table

    points = [p for p in result["points"] if "ci95" in p]
    if not points:
        return []
    head = ["point"] + [f"{label} [95%]" for _, label in INTERVAL_COLUMNS] + [
        f"{label} - {YARDSTICK} [95%]" for _, label in INTERVAL_COLUMNS]
    rows = []
    for p in points:
        cells = [p["name"]]
        for metric, _ in INTERVAL_COLUMNS:
            c = p["ci95"][metric]
            cells.append(f"{c['value']:.3f} [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]")
        for metric, _ in INTERVAL_COLUMNS:
            d = p.get("vs_yardstick", {}).get(metric)
            cells.append("-" if d is None else f"{d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
        rows.append(cells)
    queries = len(points[0]["runs"][0]["hits"]["O->O"])
    return text_table(head, rows).split("\n") + [
        f"pooled over seeds on {queries} queries; [95%]: bootstrap over queries and seeds; the difference to "
        f"{YARDSTICK} is paired (same seeds, same queries)"]
