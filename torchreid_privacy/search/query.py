"""``search``: rank a gallery folder (raw or protected) for every image of a query folder with C.

Why: the point of privacy-preserving ReID is that an authorized party searches a *protected*
gallery (P) with raw queries (O) and still finds the person. This module does that for plain
folders, on the same terms as ``test``: images resized to the model's input size exactly as the
test transform does (PIL bilinear), C's features through :class:`PrivacyModel`, distances and
metrics through :mod:`torchreid_privacy.metrics.settings` (L2-normalized features, squared Euclidean,
Market-1501 protocol). Identity labels are optional: when every file name follows Market-1501's
``PID_cCAM...`` pattern, rank-1/mAP are computed, junk boxes (pid -1) are left out as torchreid
does, and same-pid same-camera gallery images are left out of each query's list (the protocol).

Example::

    from torchreid_privacy.search.query import search
    res = search("log/run", "photos/query", "protected/gallery", "results", gallery_protected=True)
    res.metrics            # {"R1": .., "mAP": ..} or None without labels
    res.files["json"]      # results/ranks.json

Outputs are whole or absent: the rank-list PNGs are written into a temporary folder, then
``ranks.csv`` and ``ranks.json``, then the folder is renamed to ``ranklists/``; a failure removes
what the run wrote. An ``--output`` holding a previous search's results is refused unless
``overwrite`` (``--overwrite``) removes them first (only those: its ``cache/`` is kept). Nothing is
written through a symbolic link (``--output``, ``--cache`` or anything below them:
``atomic.safe_output_dir``). Files whose name is not valid UTF-8 are skipped, counted and named
(escaped) in the notes.
"""
from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from torchreid_privacy.utils import atomic, distributed
from torchreid_privacy.utils.images import UNREADABLE_IMAGE, resize_rgb, to_batch01
from torchreid_privacy.visualization.drawing import RankRow, rank_list_image, to_uint8
from torchreid_privacy.search.feature_cache import FeatureCache, content_digest, model_fingerprint
from torchreid_privacy.folders.process import list_images, read_rgb
from torchreid_privacy.search.gallery_index import INDEX_DIR, IndexOptions
from torchreid_privacy.inference import PrivacyModel
from torchreid_privacy.metrics.ranking import eval_mode, rank_metrics_features, top_k_features

log = logging.getLogger(__name__)

# (dataset, file-name pattern giving (pid, camera)); pid -1 = junk, 0 = distractor (torchreid's Market1501)
NAME_PATTERNS: Tuple[Tuple[str, "re.Pattern[str]"], ...] = (("market1501", re.compile(r"^([-\d]+)_c(\d)")),)
PNG_DIR = "ranklists"
RANKS_JSON, RANKS_CSV = "ranks.json", "ranks.csv"
CACHE_DIR = "cache"  # the default feature cache, inside --output
UNREADABLE = UNREADABLE_IMAGE  # PIL's decompression bomb included: skipped, counted, named


# ---------------------------------------------------------------------------------------------- labels
def parse_labels(names: Sequence[str]) -> Optional[Tuple[str, np.ndarray, np.ndarray]]:
    """(dataset, pids, camids) when every file name follows one dataset's pattern, else None."""
    for dataset, pattern in NAME_PATTERNS:
        matches = [pattern.search(Path(n).name) for n in names]
        if names and all(matches):
            pids = np.array([int(m.group(1)) for m in matches], dtype=np.int64)
            camids = np.array([int(m.group(2)) for m in matches], dtype=np.int64)
            return dataset, pids, camids
    return None


# ---------------------------------------------------------------------------------------------- images
def load_image(data: Union[bytes, Path], height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 at the model's size, resized as torchreid's test transform does
    (``Resize((h, w))`` on a PIL image is PIL's bilinear resize)."""
    return resize_rgb(read_rgb(data if isinstance(data, bytes) else Path(data)), height, width)


@dataclass
class FolderFeatures:
    """C's features of one folder's readable images (``names`` relative to ``root``, POSIX)."""

    root: Path
    names: List[str]
    features: torch.Tensor
    unreadable: List[str] = field(default_factory=list)
    cached: int = 0
    computed: int = 0
    seconds: float = 0.0


def folder_features(model: PrivacyModel, root: Path, names: Sequence[str], *, anonymize: bool = False,
                    batch_size: int = 64, cache: Optional[FeatureCache] = None, desc: str = "features",
                    seed: int = 0) -> FolderFeatures:
    """Embed ``root/name`` for each name (P as published first when ``anonymize``); unreadable files are skipped
    and named. Features found in ``cache`` (by file content) are not recomputed."""
    t0 = time.perf_counter()
    device = model.device
    gen = torch.Generator(device=device).manual_seed(seed)  # a random desensitizer (baseline) is repeatable
    kept: List[str] = []
    feats: List[torch.Tensor] = []
    out = FolderFeatures(root, kept, torch.zeros(0))
    with tqdm(total=len(names), desc=desc, unit="img", disable=None, dynamic_ncols=True) as bar:
        for start in range(0, len(names), batch_size):
            chunk = names[start:start + batch_size]
            rows: List[Optional[torch.Tensor]] = []
            todo: List[Tuple[int, bytes, np.ndarray]] = []
            for name in chunk:
                try:
                    data = (root / name).read_bytes()
                    digest = content_digest(data)
                    hit = cache.get([digest])[0] if cache is not None else None
                    if hit is None:
                        todo.append((len(rows), digest, load_image(data, model.height, model.width)))
                    else:
                        out.cached += 1
                except UNREADABLE as exc:
                    out.unreadable.append(name)
                    log.warning("skipping unreadable image %s: %s", root / name, exc)
                    continue
                kept.append(name)
                rows.append(None if hit is None else torch.from_numpy(np.asarray(hit, dtype=np.float32)))
            if todo:
                x01 = to_batch01([a for _, _, a in todo], device)
                if anonymize:  # P as its published file decodes (what --gallery-protected reads)
                    x01 = model.protect(x01, generator=gen)
                f = model.features(x01).cpu()
                for (i, digest, _), row in zip(todo, f):
                    rows[i] = row
                if cache is not None:
                    cache.put((digest, row.numpy()) for (_, digest, _), row in zip(todo, f))
                out.computed += len(todo)
            feats.extend(rows)
            bar.update(len(chunk))
    out.features = torch.stack(feats) if feats else torch.zeros(0, 0)
    out.seconds = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------------------------------------- search
@dataclass
class SearchResult:
    """What ``search`` found and wrote; ``indices``/``distances`` are (n_query, topk), -1 padded."""

    setting: str
    topk: int
    query: FolderFeatures
    gallery: FolderFeatures
    indices: np.ndarray
    distances: np.ndarray
    labels: Optional[str]
    metrics: Optional[Dict[str, float]]
    notes: List[str]
    files: Dict[str, str]
    timings: Dict[str, float]
    index: Optional[Dict[str, object]] = None
    not_utf8: Dict[str, List[str]] = field(default_factory=dict)  # skipped file names (escaped), per flag

    def summary_lines(self) -> List[str]:
        """What the CLI prints: notes, counts, throughput, metrics, output paths."""
        t = self.timings
        lines = list(self.notes)
        lines.append(f"features: {t['computed']} image(s) embedded in {t['features_s']:.2f}s "
                     f"({t['images_per_s']:.1f} img/s), {t['cached']} from the cache")
        lines.append(f"ranking: {len(self.query.names)} x {len(self.gallery.names)} in {1000 * t['ranking_s']:.1f} ms "
                     f"({self.setting}, top {self.topk})")
        if self.index is not None:
            ix = self.index
            how = "reused" if ix["reused"] else f"built in {ix['built_s']:.2f}s"
            probe = "" if ix["nprobe"] is None else f", {ix['nlist']} cells, nprobe {ix['nprobe']}"
            if ix.get("ef_search") is not None:
                probe = f", M {ix['hnsw_m']}, efConstruction {ix['ef_construction']}, efSearch {ix['ef_search']}"
            lines.append(f"index: {ix['kind']} over {ix['size']} gallery features ({how}{probe})")
        if self.metrics is not None:
            m = self.metrics
            lines.append(f"{self.setting}: rank-1 {100 * m['R1']:.1f}%  rank-5 {100 * m['R5']:.1f}%  "
                         f"rank-10 {100 * m['R10']:.1f}%  mAP {100 * m['mAP']:.1f}%  mINP {100 * m['mINP']:.1f}% "
                         f"({self.labels} protocol, labels from file names)")
        lines.append(f"ranks: {self.files['json']}, {self.files['csv']}")
        if "pngs" in self.files:
            lines.append(f"rank lists: {self.files['pngs']}/ ({len(self.query.names)} PNG)")
        if "cache" in self.files:
            lines.append(f"feature cache: {self.files['cache']}")
        return lines


def _input_dir(path: str, flag: str) -> Path:
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise FileNotFoundError(f"{flag}: not a folder: {path}")
    return p


def check_paths(query: str, gallery: str, output: str, cache_dir: Optional[str] = None,
                default_cache: bool = False) -> Tuple[Path, Path, Path]:
    """Inputs must be folders; nothing we write (``--output``, ``--cache``) may be in an input
    folder, be one, or contain one, be a symbolic link, or hold one where we write (``ranklists/``,
    ``cache/`` with ``default_cache``, the cache's ``index/``: a link there would send the files
    elsewhere, into an input folder as well)."""
    q, g = _input_dir(query, "--query"), _input_dir(gallery, "--gallery")
    out = Path(output).expanduser().resolve()
    targets = [("--output", out, output)]
    if cache_dir:
        targets.append(("--cache", Path(cache_dir).expanduser().resolve(), cache_dir))
    for flag, path, given in targets:
        for src_flag, src in (("--query", q), ("--gallery", g)):
            if path == src or src in path.parents:
                raise ValueError(f"{flag}: {given} is {src_flag} {src} or inside it; nothing is written into "
                                 f"an input folder")
            if path in src.parents:
                raise ValueError(f"{flag}: {given} contains {src_flag} {src}; choose a folder outside the inputs")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output: {output} exists and is not a folder")
    indexes = tuple(f"{INDEX_DIR}/{kind}" for kind in ("raw", "anonymized"))
    atomic.safe_output_dir(output, "--output", (RANKS_JSON, RANKS_CSV, PNG_DIR) +
                           (tuple(f"{CACHE_DIR}/{i}" for i in indexes) if default_cache else ()))
    if cache_dir:
        atomic.safe_output_dir(cache_dir, "--cache", indexes)
    return q, g, out


def previous_outputs(out: Path) -> List[Path]:
    """The files a previous search left in ``out`` (``ranks.json``, ``ranks.csv``, ``ranklists/*.png``,
    ``ranklists/`` itself last): what ``--overwrite`` removes. Anything else there (a folder named
    ``ranks.json``, a file of another kind in ``ranklists/``) is refused, naming it: never removed."""
    found: List[Path] = []
    for name in (RANKS_JSON, RANKS_CSV):
        path = atomic.safe_child(out, name, "--output")
        if path.is_dir():
            raise ValueError(f"--output: {path} is a folder, not a search's {name}; move it away")
        if path.exists():
            found.append(path)
    folder = atomic.safe_child(out, PNG_DIR, "--output")
    if folder.exists():
        if not folder.is_dir():
            raise ValueError(f"--output: {folder} is a file, not a search's rank-list folder; move it away")
        for entry in sorted(folder.iterdir()):
            ours = entry.is_file() and not entry.is_symlink() and (
                entry.suffix == ".png" or (entry.name.startswith(".") and entry.name.endswith(".tmp")))
            if not ours:
                raise ValueError(f"--output: {entry} is not a rank-list PNG search wrote; move it away (--overwrite "
                                 "removes only a previous search's files)")
            found.append(entry)
        found.append(folder)
    return found


def check_previous(out: Path, output: str, overwrite: bool) -> List[Path]:
    """What ``--overwrite`` will remove; without it, an ``out`` holding a previous search's results is refused
    (the old PNGs would stand beside the new ranks)."""
    found = previous_outputs(out)
    if found and not overwrite:
        shown = sorted({p.relative_to(out).parts[0] for p in found})
        raise FileExistsError(f"--output: {output} holds a previous search's results ({', '.join(shown)}); give "
                              "--overwrite to replace them, or choose another folder")
    return found


def remove_previous(found: Sequence[Path]) -> None:
    """Remove what :func:`previous_outputs` listed (files, then the emptied ``ranklists/``)."""
    for path in found:
        if path.is_dir() and not path.is_symlink():
            path.rmdir()  # ranklists/, emptied just before
        else:
            path.unlink(missing_ok=True)
    if found:
        log.info("--overwrite: removed %d file(s) of a previous search", sum(1 for p in found if p.name != PNG_DIR))


def shown_name(name: str) -> str:
    """A file name as text that prints and encodes anywhere: bytes that are not UTF-8 as ``\\xff``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _names(root: Path, flag: str) -> Tuple[List[str], List[str]]:
    """(images' relative names, those skipped because their name is not valid UTF-8, shown escaped).

    Such a name cannot go into ranks.csv or the rank lists' titles, nor be printed everywhere: it is
    skipped, counted and named now, never a failure after the work."""
    names, bad = [], []
    for p in list_images(root):
        name = p.relative_to(root).as_posix()
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            bad.append(shown_name(name))
            log.warning("%s: skipping %s: its name is not valid UTF-8 (rename it to search it)", flag,
                        shown_name(str(root / name)))
            continue
        names.append(name)
    if not names:
        if bad:
            raise ValueError(f"{flag}: no image in {shown_name(str(root))} has a valid UTF-8 name "
                             f"({len(bad)} skipped: {_named(bad)})")
        raise ValueError(f"{flag}: no images in {root}")
    return names, bad


def _named(names: Sequence[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def search(model: Union[str, PrivacyModel], query: str, gallery: str, output: str, *, topk: int = 10,
           gallery_protected: bool = False, protect_gallery: bool = False, batch_size: int = 64,
           device: Union[str, torch.device] = "cpu", cache: Union[bool, str] = True, pngs: bool = True,
           cell_height: int = 128, index: Optional[str] = None, nprobe: int = 16,
           overwrite: bool = False, index_options: Optional[IndexOptions] = None) -> Optional[SearchResult]:
    """Rank ``gallery`` for every image of ``query`` with the run's C and write the results.

    Under torchrun (a process group of N ranks) every rank embeds 1/N of the images into the
    feature cache (its own shard), then rank 0 ranks and writes alone; the other ranks return None.

    Args:
        model: a checkpoint (file or run directory) or a loaded ``PrivacyModel``.
        query, gallery: image folders (read only; any image size, resized to the model's).
        output: gets ``ranks.json``, ``ranks.csv`` and ``ranklists/<query file>.png``.
        gallery_protected: the gallery holds P already (setting O->P); ``protect_gallery``: apply G
            to the gallery first (O->P); neither: a raw gallery (O->O). Both: refused.
        cache: True = ``OUTPUT/cache``, a folder path, or False for none.
        index: rank through a faiss index (``flat`` exact, ``ivf``/``ivfpq`` approximate with
            ``nprobe`` cells searched, ``hnsw`` approximate graph; :mod:`gallery_index`), saved under
            the cache's ``index/`` and rebuilt only when the gallery's features (or its build options)
            change. None: every query against every gallery feature, one block of queries at a time.
        index_options: the index's build and search options (:class:`gallery_index.IndexOptions`;
            its ``nprobe`` wins over ``nprobe``).
        overwrite: remove a previous search's ``ranks.json``, ``ranks.csv`` and ``ranklists/`` from
            ``output`` first (without it such an ``output`` is refused before any work).
    """
    if gallery_protected and protect_gallery:
        raise ValueError("--gallery-protected and --protect-gallery exclude each other: the gallery is either "
                         "already protected or protected here")
    if int(topk) < 1:
        raise ValueError(f"--topk: expected >= 1, got {topk}")
    if int(batch_size) < 1:
        raise ValueError(f"--batch-size: expected >= 1, got {batch_size}")
    if int(nprobe) < 1:
        raise ValueError(f"--nprobe: expected >= 1, got {nprobe}")
    if index is not None:
        from torchreid_privacy.search.gallery_index import INDEX_KINDS, import_faiss

        if index not in INDEX_KINDS:
            raise ValueError(f"--index: expected one of {', '.join(INDEX_KINDS)}, got {index!r}")
        index_options = (index_options or IndexOptions(nprobe=int(nprobe))).check()
        import_faiss()
    cache_dir = None if cache is False or cache is None else (None if cache is True else str(cache))
    q_root, g_root, out = check_paths(query, gallery, output, cache_dir, default_cache=cache is True)
    previous = check_previous(out, output, overwrite)
    notes: List[str] = []
    not_utf8: Dict[str, List[str]] = {}
    (q_names, not_utf8["query"]), (g_names, not_utf8["gallery"]) = _names(q_root, "--query"), _names(g_root,
                                                                                                      "--gallery")
    for flag, bad in (("--query", not_utf8["query"]), ("--gallery", not_utf8["gallery"])):
        if bad:
            notes.append(f"{flag}: skipped {len(bad)} file(s) whose name is not valid UTF-8 (rename them to search "
                         f"them): {_named(bad)}")
    q_names, g_names, dataset = _drop_junk(q_names, g_names, q_root, g_root, notes)
    if not isinstance(model, PrivacyModel):
        from torchreid_privacy.inference import load

        model = load(model, device=device)
    cache_root = (out / CACHE_DIR) if cache is True else (Path(cache_dir).expanduser().absolute() if cache_dir
                                                          else None)
    if previous and distributed.is_main():  # --overwrite: the old results go before the work, never beside new ones
        remove_previous(previous)
    kinds = ("raw", "anonymized") if protect_gallery else ("raw",)
    caches = {kind: FeatureCache(cache_root, model_fingerprint(model, kind), kind) for kind in kinds} \
        if cache_root is not None else {}
    if distributed.world_size() > 1:
        if cache_root is None:
            raise ValueError("--no-cache: under torchrun the ranks hand their features over through the feature "
                             "cache; drop --no-cache (or give --cache DIR)")
        with eval_mode(model):
            _extract_shard(model, q_root, g_root, q_names, g_names, caches, protect_gallery, batch_size)
        if not distributed.is_main():
            return None
        caches = {kind: FeatureCache(cache_root, model_fingerprint(model, kind), kind) for kind in kinds}
    with eval_mode(model):
        return _search(model, q_root, g_root, out, q_names, g_names, dataset, notes, caches, cache_root, topk,
                       gallery_protected, protect_gallery, batch_size, pngs, cell_height, index, index_options,
                       not_utf8)


def _extract_shard(model: PrivacyModel, q_root: Path, g_root: Path, q_names: List[str], g_names: List[str],
                   caches: Dict[str, FeatureCache], protect_gallery: bool, batch_size: int) -> None:
    """Under torchrun: this rank embeds every world-size-th image and saves them as its own cache shard;
    after the barrier rank 0 finds every feature in the cache and ranks alone."""
    rank, world = distributed.rank(), distributed.world_size()
    g_kind = "anonymized" if protect_gallery else "raw"
    for root, names, kind, anonymize, desc in ((q_root, q_names, "raw", False, "query"),
                                               (g_root, g_names, g_kind, protect_gallery, "gallery")):
        folder_features(model, root, names[rank::world], anonymize=anonymize, batch_size=batch_size,
                        cache=caches[kind], desc=f"{desc} (rank {rank}/{world})")
    for cache in caches.values():
        cache.save(writer=f"r{rank}")
    distributed.barrier()


def _drop_junk(q_names: List[str], g_names: List[str], q_root: Path, g_root: Path,
               notes: List[str]) -> Tuple[List[str], List[str], Optional[str]]:
    """Names left after torchreid's junk rule (pid -1), and the dataset whose naming they follow."""
    labels = parse_labels(q_names + g_names)
    if labels is None:
        notes.append("identity labels: off (file names do not all follow Market-1501's PID_cCAM pattern); "
                     "no rank-1/mAP")
        return q_names, g_names, None
    dataset, pids, _ = labels
    kept = []
    for flag, names, root, flag_pids in (("--query", q_names, q_root, pids[:len(q_names)]),
                                         ("--gallery", g_names, g_root, pids[len(q_names):])):
        junk = int((flag_pids == -1).sum())
        if junk:
            notes.append(f"{flag}: left out {junk} junk image(s) (pid -1), as torchreid's {dataset} does")
        kept.append([n for n, p in zip(names, flag_pids) if p != -1])
        if not kept[-1]:
            raise ValueError(f"{flag}: only junk images (pid -1) in {root}")
    return kept[0], kept[1], dataset


def _search(model: PrivacyModel, q_root: Path, g_root: Path, out: Path, q_names: List[str], g_names: List[str],
            dataset: Optional[str], notes: List[str], caches: Dict[str, FeatureCache], cache_root: Optional[Path],
            topk: int, gallery_protected: bool, protect_gallery: bool, batch_size: int, pngs: bool,
            cell_height: int, index: Optional[str] = None, index_options: Optional[IndexOptions] = None,
            not_utf8: Optional[Dict[str, List[str]]] = None) -> SearchResult:
    qf = folder_features(model, q_root, q_names, batch_size=batch_size, cache=caches.get("raw"), desc="query")
    gf = folder_features(model, g_root, g_names, anonymize=protect_gallery, batch_size=batch_size,
                         cache=caches.get("anonymized" if protect_gallery else "raw"),
                         desc="gallery (G applied)" if protect_gallery else "gallery")
    for flag, ff in (("--query", qf), ("--gallery", gf)):
        if ff.unreadable:
            notes.append(f"{flag}: skipped {len(ff.unreadable)} unreadable image(s): {_named(ff.unreadable)}")
        if not ff.names:
            raise ValueError(f"{flag}: none of the images in {ff.root} could be read "
                             f"(first: {ff.unreadable[0]})")
    for c in caches.values():
        c.save()
    k = min(int(topk), len(gf.names))
    if k < topk:
        notes.append(f"--topk: {topk} is more than the gallery's {len(gf.names)} image(s); showing {k}")
    setting = "O->P" if (gallery_protected or protect_gallery) else "O->O"
    ids = _label_arrays(dataset, qf.names, gf.names) if dataset is not None else None
    t0 = time.perf_counter()
    index_info = None
    if index is not None:
        from torchreid_privacy.search.gallery_index import index_summary, normalized, open_or_build, search_top_k

        folder = None if cache_root is None else atomic.safe_child(
            cache_root, f"{INDEX_DIR}/{'anonymized' if protect_gallery else 'raw'}", "--cache")
        o = index_options
        gindex = open_or_build(folder, gf.names, normalized(gf.features), index, nlist=o.nlist or None,
                               pq_m=o.pq_m, hnsw_m=o.hnsw_m, ef_construction=o.ef_construction)
        t0 = time.perf_counter()  # ranking time: the search, not the build (reported apart)
        idx, vals = search_top_k(gindex, qf.features, gf.features, k, o.nprobe, ids, ef_search=o.ef_search,
                                 candidates=o.candidates)
        index_info = index_summary(gindex, o.nprobe, o.ef_search, o.candidates)
    else:
        idx, vals = top_k_features(qf.features, gf.features, k, ids)
    ranking_s = time.perf_counter() - t0
    metrics = None
    if ids is not None:
        q_pids, g_pids, q_camids, g_camids = ids
        try:  # always exact: every query against the whole gallery, streamed
            metrics = rank_metrics_features(qf.features, gf.features, q_pids, g_pids, q_camids, g_camids)
        except ValueError:
            notes.append("metrics: no query identity appears in the gallery (after the protocol's same-camera "
                         "removal); no rank-1/mAP")
    computed = qf.computed + gf.computed
    features_s = qf.seconds + gf.seconds
    timings = {"features_s": features_s, "computed": computed, "cached": qf.cached + gf.cached,
               "images_per_s": computed / features_s if computed and features_s > 0 else 0.0, "ranking_s": ranking_s}
    res = SearchResult(setting, k, qf, gf, idx, vals, dataset, metrics, notes, {}, timings, index_info,
                       dict(not_utf8 or {}))
    _write_outputs(res, model, out, ids, gallery_protected, protect_gallery, batch_size, cell_height, pngs)
    if cache_root is not None:
        res.files["cache"] = str(cache_root)
    return res


def _write_outputs(res: SearchResult, model: PrivacyModel, out: Path, ids, gallery_protected: bool,
                   protect_gallery: bool, batch_size: int, cell_height: int, pngs: bool) -> None:
    """``ranks.json``, ``ranks.csv`` and ``ranklists/``, all or none.

    The PNGs go into a temporary folder beside ``ranklists/`` (swept by the next run if this one is
    killed), then ``ranks.csv``, then ``ranks.json``, then the folder is renamed into place; a failure
    (an interrupt too) removes what this run wrote. Every path is checked for symbolic links first."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path, png_dir = (atomic.safe_child(out, name, "--output") for name in (RANKS_JSON, RANKS_CSV,
                                                                                           PNG_DIR))
    tmp = atomic.new_folder_beside(png_dir) if pngs else None
    written: List[str] = []
    try:
        if tmp is not None:
            _write_pngs(res, model, tmp, ids, protect_gallery, batch_size, cell_height)
        written.append(_write_csv(res, out, ids, csv_path))
        written.append(_write_json(res, out, ids, gallery_protected, protect_gallery, json_path))
        if tmp is not None:
            atomic.move_into_place(tmp, png_dir, "--output")
            res.files["pngs"] = str(png_dir)
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    res.files["csv"], res.files["json"] = written


def _label_arrays(dataset: str, q_names: Sequence[str], g_names: Sequence[str]) -> Tuple[np.ndarray, ...]:
    parsed = parse_labels(list(q_names) + list(g_names))
    if parsed is None:  # names were checked before features; the kept ones still match
        raise ValueError(f"internal: file names stopped following the {dataset} pattern")
    _, pids, camids = parsed
    n = len(q_names)
    return pids[:n], pids[n:], camids[:n], camids[n:]


def png_name(query_name: str) -> str:
    """``ranklists/`` file of a query: its relative path with '/' -> '__', plus '.png'."""
    return query_name.replace("/", "__") + ".png"


def _rows(res: SearchResult, ids) -> List[Dict[str, object]]:
    out = []
    for qi, name in enumerate(res.query.names):
        entry: Dict[str, object] = {"query": name}
        if ids is not None:
            entry.update(pid=int(ids[0][qi]), camid=int(ids[2][qi]))
        ranks = []
        for r, (gi, d) in enumerate(zip(res.indices[qi], res.distances[qi])):
            if gi < 0:
                break
            item: Dict[str, object] = {"rank": r + 1, "gallery": res.gallery.names[gi], "distance": float(d)}
            if ids is not None:
                item.update(pid=int(ids[1][gi]), camid=int(ids[3][gi]), hit=bool(ids[1][gi] == ids[0][qi]))
            ranks.append(item)
        entry["ranks"] = ranks
        out.append(entry)
    return out


def _write_json(res: SearchResult, out: Path, ids, gallery_protected: bool, protect_gallery: bool,
                path: Optional[Path] = None) -> str:
    doc = {
        "setting": res.setting,
        "query_dir": str(res.query.root), "gallery_dir": str(res.gallery.root),
        "gallery": ("protected here with G" if protect_gallery else
                    "protected (given)" if gallery_protected else "raw"),
        "topk": res.topk, "distance": "squared Euclidean of L2-normalized features",
        "labels": res.labels,
        "protocol": (f"{res.labels}: same pid and camera removed from each query's gallery" if res.labels else None),
        "metrics": res.metrics,
        "index": res.index,
        "skipped": {"query": res.query.unreadable, "gallery": res.gallery.unreadable},
        "skipped_not_utf8": {"query": res.not_utf8.get("query", []), "gallery": res.not_utf8.get("gallery", [])},
        "notes": res.notes,
        "timings": res.timings,
        "queries": _rows(res, ids),
    }
    return atomic.write_json(path or atomic.safe_child(out, RANKS_JSON, "--output"), doc)


def _write_csv(res: SearchResult, out: Path, ids, path: Optional[Path] = None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = ["query", "rank", "gallery", "distance"] + (["query_pid", "gallery_pid", "hit"] if ids is not None else [])
    w.writerow(cols)
    for entry in _rows(res, ids):
        for item in entry["ranks"]:  # type: ignore[union-attr]
            row = [entry["query"], item["rank"], item["gallery"], f"{item['distance']:.6f}"]
            if ids is not None:
                row += [entry["pid"], item["pid"], int(item["hit"])]
            w.writerow(row)
    return atomic.write_bytes(path or atomic.safe_child(out, RANKS_CSV, "--output"), buf.getvalue().encode("utf-8"))


def _display(root: Path, names: Sequence[str], model: PrivacyModel, anonymize: bool,
             batch_size: int) -> Dict[str, np.ndarray]:
    """Model-size uint8 images of ``names`` (P as published when ``anonymize``: what was searched)."""
    out: Dict[str, np.ndarray] = {}
    blank = np.full((model.height, model.width, 3), 200, np.uint8)
    gen = torch.Generator(device=model.device).manual_seed(0)
    for start in range(0, len(names), batch_size):
        chunk = names[start:start + batch_size]
        arrays = []
        for n in chunk:
            try:
                arrays.append(load_image(root / n, model.height, model.width))
            except UNREADABLE:  # changed since its features were computed
                arrays.append(blank)
        if anonymize:
            arrays = list(to_uint8(model.protect(to_batch01(arrays, model.device), generator=gen)))
        out.update(zip(chunk, arrays))
    return out


def _write_pngs(res: SearchResult, model: PrivacyModel, folder: Path, ids, protect_gallery: bool,
                batch_size: int, cell_height: int, chunk: int = 32) -> str:
    """One PNG per query into ``folder`` (a fresh temporary folder: :func:`_write_outputs` renames it)."""
    folder.mkdir(parents=True, exist_ok=True)
    q_names, g_names = res.query.names, res.gallery.names
    gallery_kind = "P" if res.setting == "O->P" else "O"
    for start in tqdm(range(0, len(q_names), chunk), desc="rank lists", unit="x32", disable=None,
                      dynamic_ncols=True):
        qs = list(range(start, min(start + chunk, len(q_names))))
        needed = sorted({int(i) for qi in qs for i in res.indices[qi] if i >= 0})
        q_imgs = _display(res.query.root, [q_names[qi] for qi in qs], model, False, batch_size)
        g_imgs = _display(res.gallery.root, [g_names[i] for i in needed], model, protect_gallery, batch_size)
        for qi in qs:
            keep = [i for i in res.indices[qi] if i >= 0]
            hits = None if ids is None else [bool(ids[1][i] == ids[0][qi]) for i in keep]
            row = RankRow(q_imgs[q_names[qi]], [g_imgs[g_names[i]] for i in keep],
                          list(res.distances[qi][:len(keep)]), hits,
                          query_caption=f"pid {ids[0][qi]}" if ids is not None else "")
            title = f"{q_names[qi]}  ({res.setting}: query O, gallery {gallery_kind})"
            img = rank_list_image([row], title=title, cell_height=cell_height, topk=res.topk)
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            atomic.write_bytes(atomic.safe_child(folder, png_name(q_names[qi])), buf.getvalue())
    return str(folder)
