"""What anonymization changes, seen on a test split: four-setting rank lists, a t-SNE, the grid.

Why: the four numbers O->O, O->P, P->O, P->P say *how much* retrieval survives anonymization; the
pictures say *why*. For the same queries, the rank lists of the four settings sit above each other;
the t-SNE of C's features of O and P (colour = identity, circle = O, triangle = P, a grey line from
each image to its P) shows whether P lands in its identity's cluster; the O | M | P | R grid shows
the images. Features and P are computed exactly as the evaluator computes them (same batches, same
seeded desensitizer), and rank lists use the evaluation's distances and Market-1501 protocol.

This module needs only a ``PrivacyModel`` (duck-typed: ``to01``, ``normalize``, ``embed``,
``anonymize``, ``conventional``, ``recover``) and one target's torchreid test loaders, so the engine
can put the same pictures into TensorBoard at the end of training (:func:`tensorboard_images`);
:func:`torchreid_privacy.folders.visualize.write_views` does it for a saved run.

Example::

    views = compute_views(model, datamanager.test_loader["market1501"], "market1501")
    save_views(views, "views")       # {"ranklists": [png, ...], "tsne": png, "grid": png, "rank": {...}}
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from torchreid_privacy.utils import atomic
from torchreid_privacy.visualization.drawing import PALETTE, RankRow, rank_list_image, scatter_plot, stack_vertically, to_uint8
from torchreid_privacy.metrics.settings import SETTINGS, evaluate_settings
from torchreid_privacy.publish import round_to_8bit
from torchreid_privacy.utils.images import save_grid
from torchreid_privacy.metrics.ranking import distances, eval_mode, protocol_mask, top_k

KINDS = ("O", "P")
ModelLike = Any  # a PrivacyModel; not imported: it sits a layer above (tests/test_layering.py)


@dataclass
class SplitFeatures:
    """C's features of O and P for a target's query and gallery, with identities and file paths."""

    features: Dict[str, Dict[str, torch.Tensor]]
    pids: Dict[str, np.ndarray]
    camids: Dict[str, np.ndarray]
    impaths: Dict[str, List[str]]
    grid: List[torch.Tensor] = field(default_factory=list)  # O, M, P[, R] of the first query images

    def metrics(self) -> Dict[str, Dict[str, float]]:
        """The four settings' ranks (``evaluate_settings``, as ``test``)."""
        return evaluate_settings(self.features, q_pids=self.pids["query"], g_pids=self.pids["gallery"],
                                 q_camids=self.camids["query"], g_camids=self.camids["gallery"])


@dataclass
class Views:
    """The pictures of one target: (query file, four-setting rank list) pairs, the t-SNE, the grid."""

    target: str
    ranklists: List[tuple]
    tsne: Image.Image
    grid: List[torch.Tensor]
    rank: Dict[str, Dict[str, float]]


@torch.no_grad()
def split_features(model: ModelLike, loaders: Mapping[str, Any], eval_seed: int = 0, grid_images: int = 8,
                   desc: str = "views") -> SplitFeatures:
    """Features of O and P for ``loaders['query']`` and ``['gallery']`` (torchreid test loaders,
    batches with 'img', 'pid', 'camid', 'impath'); P and the seeded M as published, as in ``Evaluator``."""
    device = model.device
    gen = torch.Generator(device=device).manual_seed(eval_seed)
    can_recover = model.decoder is not None and (not model.keyed or model.has_key)
    out = SplitFeatures({}, {}, {}, {})
    for split in ("query", "gallery"):
        fo, fp, pids, camids, paths = [], [], [], [], []
        for data in tqdm(loaders[split], desc=f"{desc}/{split}", leave=False, disable=None, dynamic_ncols=True):
            imgs = data["img"].to(device)
            o01 = round_to_8bit(model.to01(imgs))  # the 8-bit files, as Evaluator
            m01 = model.publish(model.conventional(o01, gen))
            p01 = m01 if model.generator is None else model.protect(o01)
            fo.append(model.embed(imgs).cpu())
            fp.append(model.embed(model.normalize(p01)).cpu())
            pids.append(torch.as_tensor(data["pid"]))
            camids.append(torch.as_tensor(data["camid"]))
            paths.extend(data["impath"])
            if split == "query" and not out.grid and grid_images > 0:
                cols = [o01, m01, p01] + ([model.recover(p01)] if can_recover else [])
                out.grid = [c[:grid_images].cpu() for c in cols]
        if not paths:
            raise ValueError(f"--target: the {split} split is empty")
        out.features[split] = {"O": torch.cat(fo), "P": torch.cat(fp)}
        out.pids[split] = torch.cat(pids).numpy()
        out.camids[split] = torch.cat(camids).numpy()
        out.impaths[split] = paths
    return out


@torch.no_grad()
def _images(model: ModelLike, loader: Any, paths: Sequence[str], kind: str) -> List[np.ndarray]:
    """Model-size uint8 images of ``paths`` through the loader's own (test) transform; P as published."""
    from torchreid_privacy.bridge import read_image

    if not paths:
        return []
    tf = loader.dataset.transform
    o01 = round_to_8bit(model.to01(torch.stack([tf(read_image(p)) for p in paths]).to(model.device)))
    return list(to_uint8(o01 if kind == "O" else model.protect(o01)))


def pick_queries(split: SplitFeatures, count: int) -> List[int]:
    """``count`` query indices spread over the query list, each with a true match in the gallery
    under the protocol (another camera), preferring distinct identities."""
    qp, gp, qc, gc = split.pids["query"], split.pids["gallery"], split.camids["query"], split.camids["gallery"]
    valid = [i for i in range(len(qp)) if ((gp == qp[i]) & (gc != qc[i])).any()]
    if not valid:
        raise ValueError("no query has a true match in the gallery; nothing to show")
    firsts: Dict[int, int] = {}
    for i in valid:
        firsts.setdefault(int(qp[i]), i)
    pool = list(firsts.values()) if len(firsts) >= count else valid
    pos = np.unique(np.linspace(0, len(pool) - 1, min(count, len(pool))).round().astype(int))
    return [pool[p] for p in pos]


def four_setting_rank_lists(model: ModelLike, loaders: Mapping[str, Any], split: SplitFeatures,
                            queries: Sequence[int], topk: int = 10, cell_height: int = 96,
                            rank: Optional[Dict[str, Dict[str, float]]] = None) -> List[tuple]:
    """For each query index: (query file name, PIL image with one rank-list row per setting)."""
    qp, gp, qc, gc = split.pids["query"], split.pids["gallery"], split.camids["query"], split.camids["gallery"]
    q_idx = np.asarray(queries, dtype=np.int64)
    exclude = protocol_mask(qp[q_idx], gp, qc[q_idx], gc)
    tops = {}
    for setting in SETTINGS:
        qk, gk = setting.split("->")
        dist = distances(split.features["query"][qk][q_idx], split.features["gallery"][gk])
        tops[setting] = top_k(dist, topk, exclude)
    needed = sorted({int(i) for idx, _ in tops.values() for i in idx.ravel() if i >= 0})
    g_paths = [split.impaths["gallery"][i] for i in needed]
    q_paths = [split.impaths["query"][i] for i in q_idx]
    imgs = {("gallery", k): dict(zip(needed, _images(model, loaders["gallery"], g_paths, k))) for k in KINDS}
    for k in KINDS:
        imgs["query", k] = dict(zip(q_idx.tolist(), _images(model, loaders["query"], q_paths, k)))
    out = []
    for row_i, qi in enumerate(q_idx.tolist()):
        rows = []
        for setting in SETTINGS:
            qk, gk = setting.split("->")
            idx, vals = tops[setting]
            keep = [int(i) for i in idx[row_i] if i >= 0]
            note = f"R1 = {100 * rank[setting]['R1']:.0f}%" if rank else ""
            rows.append(RankRow(imgs["query", qk][qi], [imgs["gallery", gk][i] for i in keep],
                                list(vals[row_i][:len(keep)]), [bool(gp[i] == qp[qi]) for i in keep],
                                label=setting, note=note, query_caption=f"pid {qp[qi]}"))
        name = os.path.basename(split.impaths["query"][qi])
        title = f"{name}: the same query in the four settings (O raw, P protected; green = same identity)"
        out.append((name, rank_list_image(rows, title=title, cell_height=cell_height, topk=topk)))
    return out


def tsne_image(split: SplitFeatures, identities: int = 20, seed: int = 0, title: str = "") -> Image.Image:
    """t-SNE (scikit-learn) of L2-normalized features of O and P of ``identities`` test identities
    (those with the most images; pid 0 distractors and -1 junk left out)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    pids = np.concatenate([split.pids["query"], split.pids["gallery"]])
    feats = {k: torch.cat([split.features["query"][k], split.features["gallery"][k]]) for k in KINDS}
    ids, counts = np.unique(pids[pids > 0], return_counts=True)
    if len(ids) == 0:
        raise ValueError("t-SNE: the split has no identities (pid > 0)")
    chosen = np.sort(ids[np.lexsort((ids, -counts))][:identities])
    sel = np.flatnonzero(np.isin(pids, chosen))
    x = torch.cat([F.normalize(feats[k][sel].float(), dim=1) for k in KINDS]).numpy()
    n = len(sel)
    tsne = TSNE(n_components=2, init="pca", random_state=seed, perplexity=float(min(30.0, max(2.0, (2 * n - 1) / 3))))
    # a few hundred points: one thread. OpenMP's spin-waiting on a busy machine made it 50x slower (measured)
    with threadpool_limits(limits=1):
        emb = tsne.fit_transform(x)
    group_of = {int(p): g for g, p in enumerate(chosen)}
    groups = [group_of[int(p)] for p in pids[sel]] * 2
    domains = [0] * n + [1] * n
    pairs = np.stack([np.arange(n), np.arange(n) + n], axis=1)
    title = title or (f"t-SNE of C's features: {len(chosen)} identities (colour), O = circle, P = triangle, "
                      f"grey line = an image to its P")
    return scatter_plot(emb, groups, [f"id {p}" for p in chosen], domains, pairs=pairs, title=title)


def check_counts(queries: int, topk: int, identities: int) -> None:
    """The view sizes are positive, and the t-SNE's identities fit its palette."""
    for flag, value in (("--queries", queries), ("--topk", topk), ("--identities", identities)):
        if int(value) < 1:
            raise ValueError(f"{flag}: expected >= 1, got {value}")
    if identities > len(PALETTE):
        raise ValueError(f"--identities: at most {len(PALETTE)} (colours told apart), got {identities}")


def compute_views(model: ModelLike, loaders: Mapping[str, Any], target: str = "", *, queries: int = 4,
                  topk: int = 10, identities: int = 20, eval_seed: int = 0, grid_images: int = 8,
                  cell_height: int = 96) -> Views:
    """Every picture for one target's test loaders (model put in eval mode, its modes restored)."""
    check_counts(queries, topk, identities)
    with eval_mode(model):
        split = split_features(model, loaders, eval_seed=eval_seed, grid_images=grid_images)
        rank = split.metrics()
        ranklists = four_setting_rank_lists(model, loaders, split, pick_queries(split, queries), topk,
                                            cell_height, rank)
        tsne = tsne_image(split, identities, seed=eval_seed,
                          title=f"t-SNE of C's features ({target}): colour = identity, circle = O, triangle = P, "
                                f"grey line = an image to its P" if target else "")
    return Views(target, ranklists, tsne, split.grid, rank)


def _save_png(img: Image.Image, path: str) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic.write_bytes(path, buf.getvalue())


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def save_views(views: Views, output_dir: str) -> Dict[str, Any]:
    """Write the pictures as PNGs; returns their paths (and the four settings' ranks)."""
    os.makedirs(output_dir, exist_ok=True)
    t = _safe(views.target or "test")
    paths: Dict[str, Any] = {"target": views.target, "rank": views.rank, "ranklists": []}
    for name, img in views.ranklists:
        paths["ranklists"].append(_save_png(img, os.path.join(output_dir, f"ranklists-{t}-{_safe(name)}.png")))
    paths["tsne"] = _save_png(views.tsne, os.path.join(output_dir, f"tsne-{t}.png"))
    if views.grid:
        paths["grid"] = os.path.join(output_dir, f"grid-{t}.png")
        save_grid(paths["grid"], views.grid)
    return paths


def grid_image(columns: Sequence[torch.Tensor]) -> np.ndarray:
    """The O | M | P | R grid as an (H, W, 3) uint8 array, laid out as ``images.save_grid`` does."""
    from torchvision.utils import make_grid

    n = min(c.shape[0] for c in columns)
    rows = torch.stack([c[:n].float().cpu() for c in columns], dim=1)
    return to_uint8(make_grid(rows.flatten(0, 1), nrow=len(columns), padding=2)[None])[0]


def tensorboard_images(writer: Any, model: ModelLike, loaders: Mapping[str, Any], step: int,
                       tag: str = "Test", *, queries: int = 2, topk: int = 10, identities: int = 20,
                       eval_seed: int = 0, grid_images: int = 8) -> Optional[Views]:
    """The same pictures into TensorBoard (``add_image``): ``TAG/ranklists``, ``TAG/tsne``, ``TAG/grid``.

    ``loaders``: one target's ``{'query': ..., 'gallery': ...}`` test loaders. Rank 0 only (the
    caller's ``writer`` is None elsewhere: then nothing is computed).
    """
    if writer is None:
        return None
    views = compute_views(model, loaders, tag, queries=queries, topk=topk, identities=identities,
                          eval_seed=eval_seed, grid_images=grid_images)
    writer.add_image(f"{tag}/ranklists", np.asarray(stack_vertically([im for _, im in views.ranklists])), step,
                     dataformats="HWC")
    writer.add_image(f"{tag}/tsne", np.asarray(views.tsne), step, dataformats="HWC")
    if views.grid:
        writer.add_image(f"{tag}/grid", grid_image(views.grid), step, dataformats="HWC")
    return views
