"""``torchreid-privacy bench scale``: evaluation and search at MSMT17's size and at a million images.

Why: the four-setting evaluation once built each setting's whole distance matrix (3.8 GB at
MSMT17's 11,659 x 82,161), and a city's gallery is millions of crops. This bench measures, on
identity-labelled features of two kinds (``--features``):

- ``gaussian``: identity centres plus noise as large as them, P = O plus more noise (the old bench);
- ``reid``: drawn from a model fitted to a trained run's C (``--features-from RUN``: augmented crops
  of its test identities, embedded; :mod:`.feature_fit`, :mod:`.run_crops`), P fitted too;

the rows:

- ``eval-whole``: the old path, per setting the whole distance matrix, then ``evaluate_rank``;
- ``eval-streamed``: :func:`evaluate_settings`, one block of queries at a time;
- ``search-exact``: every query against every gallery feature, streamed (:func:`top_k_features`),
  and the R1/mAP of that exact search (the protocol's same-camera matches dropped);
- ``flat``, ``ivf``, ``ivfpq``, ``hnsw``: the faiss indexes of ``search --index`` (build time, ms per
  query, speed-up over ``search-exact``, recall@10 against it: of whole lists and of the
  same-identity matches in them), at each ``--nprobe`` / ``--ef-search`` of a comma-separated
  list; a comma-separated ``--nlist`` builds one ivf/ivfpq row per value.

Each row runs in a fresh process that first makes the features, then resets the kernel's
peak-memory mark (``/proc/self/clear_refs``) and reports its wall time and its peak resident
memory above the memory held at that point, i.e. above the features.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import resource
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

SIZES: Dict[str, Dict[str, int]] = {
    "tiny": dict(queries=300, gallery=3000, dim=32, ids=300),  # the tests'
    "small": dict(queries=1000, gallery=20000, dim=128, ids=1000),
    "msmt17": dict(queries=11659, gallery=82161, dim=512, ids=3060),
    "100k": dict(queries=1000, gallery=100_000, dim=512, ids=10_000),  # a tenth of million: to extrapolate builds
    "million": dict(queries=1000, gallery=1_000_000, dim=512, ids=100_000),
}
DEFAULT_ROWS = {"tiny": ("eval-whole", "eval-streamed", "search-exact", "flat", "ivf", "ivfpq", "hnsw"),
                "small": ("eval-whole", "eval-streamed", "search-exact", "flat", "ivf", "ivfpq", "hnsw"),
                "msmt17": ("eval-whole", "eval-streamed", "search-exact", "flat", "ivf", "ivfpq", "hnsw"),
                "100k": ("search-exact", "ivf", "hnsw"),
                "million": ("search-exact", "flat", "ivf", "ivfpq", "hnsw")}
ROWS = ("eval-whole", "eval-streamed", "search-exact", "flat", "ivf", "ivfpq", "hnsw")
INDEX_ROWS = ("flat", "ivf", "ivfpq", "hnsw")
FEATURE_KINDS = ("gaussian", "reid")
TOPK = 10
SETTINGS4 = ("O->O", "O->P", "P->O", "P->P")
CAMERAS = 6


def reset_peak() -> bool:
    """Start a new peak-memory measurement (Linux: VmHWM reset through /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """Peak resident memory since the last :func:`reset_peak` (else since the process started)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def rss_mb() -> float:
    """Resident memory now."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def make_features(size: Dict[str, int], seed: int = 0, block: int = 65536, kind: str = "gaussian",
                  fit_path: Optional[str] = None, with_p: bool = True) -> Dict[str, Any]:
    """O (and P) features of query and gallery, ids and cameras; written block by block. O comes
    from its own random stream, so it is the same with or without P."""
    streams = np.random.SeedSequence(seed).spawn(3)
    rng, rng_o, rng_p = (np.random.default_rng(s) for s in streams)
    n_ids = size["ids"]
    if kind == "reid":
        from torchreid_privacy.bench.feature_fit import FeatureModel

        if fit_path is None:
            raise ValueError("--features reid: needs --features-from RUN (or a fitted .npz)")
        model = FeatureModel.load(fit_path)
        means = model.identity_means(n_ids, rng)
    elif kind == "gaussian":
        d = size["dim"]
        centres = rng.standard_normal((n_ids, d), dtype=np.float32)
    else:
        raise ValueError(f"--features: expected one of {', '.join(FEATURE_KINDS)}, got {kind!r}")
    out: Dict[str, Any] = {}
    for side, n in (("query", size["queries"]), ("gallery", size["gallery"])):
        pids = rng.integers(0, n_ids, n)
        cams = rng.integers(0, CAMERAS, n)
        if kind == "reid":
            o = model.sample(pids, cams, means, rng_o, block=block)
            p = model.sample_p(o, rng_p, block=block) if with_p else None
        else:
            o = np.empty((n, d), np.float32)
            p = np.empty((n, d), np.float32) if with_p else None
            for start in range(0, n, block):
                stop = min(start + block, n)
                o[start:stop] = centres[pids[start:stop]] + 0.8 * rng_o.standard_normal((stop - start, d),
                                                                                         dtype=np.float32)
                if p is not None:
                    p[start:stop] = o[start:stop] + 0.8 * rng_p.standard_normal((stop - start, d), dtype=np.float32)
        out[side] = {"O": o, "P": p, "pids": pids, "cams": cams}
    return out


# a row's job: (name, size, threads, work_dir, options); options hold the sweep and the index parameters
RowJob = Tuple[str, Dict[str, int], int, str, Dict[str, Any]]


def _row(name: str, size: Dict[str, int], threads: int, work_dir: str, opts: Dict[str, Any]) -> Dict[str, Any]:
    """One row, in this (fresh) process."""
    import torch

    torch.set_num_threads(threads)
    kind = opts.get("features", "gaussian")
    feats = make_features(size, kind=kind, fit_path=opts.get("fit_path"), with_p=name.startswith("eval"))
    q, g = feats["query"], feats["gallery"]
    ids = (q["pids"], g["pids"], q["cams"], g["cams"])
    exact_path = os.path.join(work_dir, f"exact-{kind}.npy")
    reset_peak()  # the peak of making the features (and of the imports) is not the row's
    base = rss_mb()
    t0 = time.perf_counter()
    extra: Dict[str, Any] = {}
    if name == "eval-whole":
        from torchreid_privacy.metrics.settings import evaluate_rank, feature_distance

        for setting in SETTINGS4:
            qk, gk = setting.split("->")
            dist = feature_distance(torch.from_numpy(q[qk]), torch.from_numpy(g[gk]))
            cmc, m_ap, _ = evaluate_rank(dist, *ids, max_rank=10)
            extra[setting] = {"R1": float(cmc[0]), "mAP": m_ap}
            del dist
    elif name == "eval-streamed":
        from torchreid_privacy.metrics.settings import evaluate_settings

        res = evaluate_settings({"query": {k: torch.from_numpy(q[k]) for k in "OP"},
                                 "gallery": {k: torch.from_numpy(g[k]) for k in "OP"}},
                                q_pids=ids[0], g_pids=ids[1], q_camids=ids[2], g_camids=ids[3], ranks=(1,))
        extra = {s: {"R1": v["R1"], "mAP": v["mAP"]} for s, v in res.items()}
    elif name == "search-exact":
        from torchreid_privacy.metrics.ranking import rank_metrics_features, top_k_features

        idx, _ = top_k_features(torch.from_numpy(q["O"]), torch.from_numpy(g["O"]), TOPK)
        extra["ms_per_query"] = 1000 * (time.perf_counter() - t0) / len(q["O"])
        np.save(exact_path, idx)
        if opts.get("metrics", True):  # after the timing: a full ranking per query, not a search's work
            t1 = time.perf_counter()
            m = rank_metrics_features(torch.from_numpy(q["O"]), torch.from_numpy(g["O"]), *ids)
            extra["O->O"] = {"R1": m["R1"], "mAP": m["mAP"]}
            extra["metrics_s"] = time.perf_counter() - t1
    else:
        extra.update(_index_row(name, q, g, threads, exact_path, opts))
    return {"row": name, "features": kind, "seconds": time.perf_counter() - t0,
            "peak_mb_above_features": max(0.0, peak_mb() - base),
            "features_mb": sum(a.nbytes for side in (q, g) for a in (side["O"], side["P"]) if a is not None) / 2**20,
            "load_1min": os.getloadavg()[0], **extra}


def _index_row(name: str, q: Dict[str, Any], g: Dict[str, Any], threads: int, exact_path: str,
               opts: Dict[str, Any]) -> Dict[str, Any]:
    """Build one index over the gallery's O, search it at each point of the row's sweep."""
    from torchreid_privacy.search.gallery_index import build, import_faiss, normalized

    import_faiss().omp_set_num_threads(threads)
    gn = normalized(g["O"])
    index = build(gn, name, digest="bench", nlist=opts.get("nlist") or None, hnsw_m=opts.get("hnsw_m", 0),
                  ef_construction=opts.get("ef_construction", 0))
    del gn
    exact = np.load(exact_path) if os.path.exists(exact_path) else None
    if name in ("ivf", "ivfpq"):
        points = [{"nprobe": n} for n in dict.fromkeys(min(n, index.nlist) for n in opts.get("nprobes", (16,)))]
    elif name == "hnsw":
        points = [{"ef_search": e} for e in opts.get("ef_search", (128,))]
    else:
        points = [{}]
    # one untimed search first: the first sweep point should not pay for touching the index's pages
    index.search(normalized(q["O"][:32]), TOPK, **points[0])
    sweep = [_search_row(index, q["O"], g["O"], point, exact, (q["pids"], g["pids"]), opts.get("candidates", 0))
             for point in points]
    out: Dict[str, Any] = {"build_s": index.built_s, "nlist": index.nlist, **sweep[0]}
    if name == "hnsw":
        out.update(hnsw_m=index.hnsw_m, ef_construction=index.ef_construction)
    if len(sweep) > 1:
        out["sweep"] = sweep
    return out


def _search_row(index, qo: np.ndarray, go: np.ndarray, point: Dict[str, int], exact: Optional[np.ndarray],
                pids: Sequence[np.ndarray], candidates: int = 0) -> Dict[str, Any]:
    """ms per query and, when the exact lists are known, recall@10 against them at one sweep point
    (``nprobe`` or ``ef_search``): of all ten entries, and of the entries that are the query's
    identity (the matches ReID is after; the rest of an exact list is the nearest of unrelated
    identities, near-ties no index is built to find)."""
    import torch

    from torchreid_privacy.search.gallery_index import recall_at_k, search_top_k

    t0 = time.perf_counter()
    idx, _ = search_top_k(index, torch.from_numpy(qo), torch.from_numpy(go), TOPK, nprobe=point.get("nprobe", 1),
                          ef_search=point.get("ef_search", 1), candidates=candidates)
    out: Dict[str, Any] = {"nprobe": point.get("nprobe"), "ef_search": point.get("ef_search"),
                           "ms_per_query": 1000 * (time.perf_counter() - t0) / len(qo)}
    if exact is not None:
        out["recall_at_10"] = recall_at_k(idx, exact)
        same = pids[1][exact] == pids[0][:, None]
        found = np.array([np.isin(e, a) for e, a in zip(exact, idx)])
        out["match_recall_at_10"] = float(found[same].mean()) if same.any() else float("nan")
    return out


def _in_child(job: RowJob) -> Dict[str, Any]:
    return _row(*job)


def jobs(rows: Sequence[str], opts: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
    """(row, its options): one ivf/ivfpq row per ``--nlist`` value, every other row once."""
    out = []
    for name in rows:
        for nlist in (opts.get("nlists") or [0]) if name in ("ivf", "ivfpq") else [0]:
            out.append((name, {**opts, "nlist": nlist}))
    return out


def run(size_name: str, rows: Sequence[str], threads: int, nprobes: Sequence[int] = (16,),
        features: str = "gaussian", fit_path: Optional[str] = None, nlists: Sequence[int] = (),
        hnsw_m: int = 0, ef_construction: int = 0, ef_search: Sequence[int] = (128,), candidates: int = 0,
        metrics: bool = True, size: Optional[Dict[str, int]] = None) -> List[Dict[str, Any]]:
    """Every row, each in a fresh process; the index rows' speed-ups are over this run's search-exact."""
    size = size or SIZES[size_name]
    opts = {"features": features, "fit_path": fit_path, "nprobes": tuple(nprobes), "nlists": tuple(nlists),
            "hnsw_m": hnsw_m, "ef_construction": ef_construction, "ef_search": tuple(ef_search),
            "candidates": candidates, "metrics": metrics}
    out: List[Dict[str, Any]] = []
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as work:
        for name, row_opts in jobs(rows, opts):
            with ctx.Pool(1) as pool:  # a fresh process per row: its own peak memory
                out.append(pool.apply(_in_child, ((name, size, threads, work, row_opts),)))
            add_speedups(out)
            print(format_row(out[-1]), flush=True)
    return out


def add_speedups(rows: List[Dict[str, Any]]) -> None:
    """``speedup``: search-exact's ms per query over each index sweep point's (same features)."""
    exact = {r["features"]: r["ms_per_query"] for r in rows if r["row"] == "search-exact"}
    for r in rows:
        base = exact.get(r["features"])
        if r["row"] in INDEX_ROWS and base:
            for point in [r, *r.get("sweep", [])]:
                point["speedup"] = base / max(point["ms_per_query"], 1e-9)


def _params(r: Dict[str, Any], point: Dict[str, Any]) -> str:
    if r["row"] in ("ivf", "ivfpq"):
        return f"nlist {r['nlist']} nprobe {point['nprobe']}"
    if r["row"] == "hnsw":
        return f"M {r['hnsw_m']} efC {r['ef_construction']} efS {point['ef_search']}"
    return ""


def format_row(r: Dict[str, Any]) -> str:
    parts = [f"{r['row']:<14}", f"{r['seconds']:8.1f} s", f"peak +{r['peak_mb_above_features']:8.0f} MB"]
    if "ms_per_query" in r:
        parts.append(f"{r['ms_per_query']:8.2f} ms/query")
    if "speedup" in r:
        parts.append(f"x{r['speedup']:.1f}")
    if "build_s" in r:
        parts.append(f"build {r['build_s']:.1f} s")
    if _params(r, r):
        parts.append(_params(r, r))
    if "recall_at_10" in r:
        parts.append(f"recall@10 {r['recall_at_10']:.3f} (matches {r['match_recall_at_10']:.3f})")
    for more in r.get("sweep", [])[1:]:  # the same index at the other nprobe / efSearch values
        what = f"nprobe {more['nprobe']}" if more.get("nprobe") is not None else f"efS {more['ef_search']}"
        parts.append(f"| {what} {more['ms_per_query']:.2f} ms/query"
                     + (f" x{more['speedup']:.1f}" if "speedup" in more else "")
                     + (f" recall@10 {more['recall_at_10']:.3f} (matches {more['match_recall_at_10']:.3f})"
                        if "recall_at_10" in more else ""))
    for setting in ("O->O", "O->P"):
        if setting in r:
            parts.append(f"{setting} R1 {100 * r[setting]['R1']:.1f} mAP {100 * r[setting]['mAP']:.1f}")
    return "  ".join(parts)


def format_table(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """A markdown table: one line per search row and sweep point."""
    def num(v: Any, fmt: str) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    lines = ["| features | index | parameters | build s | peak MB above features | ms/query | speed-up | "
             "recall@10 | recall@10 of true matches |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["row"] != "search-exact" and r["row"] not in INDEX_ROWS:
            continue
        for point in r.get("sweep", [r]):
            exact = r["row"] == "search-exact"
            lines.append(f"| {r['features']} | {'exact' if exact else r['row']} | "
                         f"{'' if exact else _params(r, point)} | {num(r.get('build_s'), '.1f')} | "
                         f"{r['peak_mb_above_features']:.0f} | {point['ms_per_query']:.2f} | "
                         f"{'1.0' if exact else num(point.get('speedup'), '.1f')} | "
                         f"{'1.000' if exact else num(point.get('recall_at_10'), '.3f')} | "
                         f"{'1.000' if exact else num(point.get('match_recall_at_10'), '.3f')} |")
    return lines


def _ints(parser: argparse.ArgumentParser, flag: str, text: Optional[str], least: int) -> List[int]:
    """A comma-separated list of integers >= ``least``, or a usage error naming ``flag``."""
    if text is None:
        return []
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        parser.error(f"{flag}: expected integers, got {text!r}")
    if not values or min(values) < least:
        parser.error(f"{flag}: expected integers >= {least}, got {text!r}")
    return values


def main(argv: Optional[Sequence[str]] = None) -> int:
    from torchreid_privacy.search.index_defaults import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M

    parser = argparse.ArgumentParser(prog="torchreid-privacy bench scale", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="msmt17", choices=list(SIZES))
    parser.add_argument("--rows", default=None, help=f"comma-separated, of: {', '.join(ROWS)} (default by size)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--features", default=None,
                        help="comma-separated, of: gaussian (identity centres plus noise as large), reid (fitted to "
                             "a run's C, needs --features-from); default: reid with --features-from, else gaussian")
    parser.add_argument("--features-from", metavar="RUN", help="a trained run (directory or checkpoint): its C "
                        "embeds augmented crops of its test identities and the reid features are drawn from a model "
                        "fitted to them; or a .npz that --save-fit wrote")
    parser.add_argument("--save-fit", metavar="NPZ", help="write the fitted feature model here (reuse it with "
                                                          "--features-from NPZ)")
    parser.add_argument("--check-root", metavar="ROOT", help="with --features-from RUN: a data root holding the run's "
                        "dataset with more identities (e.g. make-data --root ROOT --ids 1500): the run's C on its test "
                        "split checks the fitted features' R1/mAP at more identities than the fit saw")
    parser.add_argument("--crops-per-image", type=int, default=16, help="augmented crops embedded per test image "
                                                                        "to fit the reid features (default 16)")
    parser.add_argument("--nlist", default=None, help="ivf/ivfpq cells; a comma-separated list builds one row "
                                                      "per value (default: about 4 sqrt(gallery))")
    parser.add_argument("--nprobe", default="16", help="ivf/ivfpq cells searched per query; a comma-separated "
                                                       "list sweeps one built index (e.g. 16,64,256)")
    parser.add_argument("--hnsw-m", type=int, default=HNSW_M, help=f"hnsw links per vector (default {HNSW_M})")
    parser.add_argument("--ef-construction", type=int, default=HNSW_EF_CONSTRUCTION,
                        help=f"hnsw candidates while linking (default {HNSW_EF_CONSTRUCTION})")
    parser.add_argument("--ef-search", default=str(HNSW_EF_SEARCH),
                        help=f"hnsw search breadth; a comma-separated list sweeps one built index "
                             f"(default {HNSW_EF_SEARCH})")
    parser.add_argument("--candidates", type=int, default=0, help="candidates each index proposes for the exact "
                                                                  "re-rank (default 0: the 10 listed)")
    parser.add_argument("--no-metrics", action="store_true", help="search-exact: skip the R1/mAP (a full ranking "
                                                                  "per query)")
    parser.add_argument("--output", default=None, help="write the rows as JSON here")
    opts = parser.parse_args([] if argv is None else list(argv))
    rows = [r for r in (opts.rows.split(",") if opts.rows else DEFAULT_ROWS[opts.size]) if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"--rows: unknown row '{unknown[0]}' (of: {', '.join(ROWS)})")
    nprobes = _ints(parser, "--nprobe", opts.nprobe, 1)
    nlists = _ints(parser, "--nlist", opts.nlist, 1)
    ef_search = _ints(parser, "--ef-search", opts.ef_search, 1)
    if opts.threads < 1:
        parser.error(f"--threads: expected >= 1, got {opts.threads}")
    for flag, value, least in (("--hnsw-m", opts.hnsw_m, 2), ("--ef-construction", opts.ef_construction, 1),
                               ("--candidates", opts.candidates, 0), ("--crops-per-image", opts.crops_per_image, 1)):
        if value < least:
            parser.error(f"{flag}: expected >= {least}, got {value}")
    kinds = [k for k in (opts.features or ("reid" if opts.features_from else "gaussian")).split(",") if k]
    bad = [k for k in kinds if k not in FEATURE_KINDS]
    if bad or not kinds:
        parser.error(f"--features: expected some of {', '.join(FEATURE_KINDS)}, got {opts.features!r}")
    if "reid" in kinds and not opts.features_from:
        parser.error("--features reid: needs --features-from RUN (a trained run) or a fitted .npz")
    if opts.features_from and "reid" not in kinds:
        parser.error("--features-from: only with --features reid")
    for flag, value in (("--save-fit", opts.save_fit), ("--check-root", opts.check_root)):
        if value and not opts.features_from:
            parser.error(f"{flag}: only with --features-from RUN")
    size = SIZES[opts.size]
    with tempfile.TemporaryDirectory() as fit_dir:
        fit_path, fit_report = None, None
        if "reid" in kinds:
            fit_path, fit_report = _fit(opts, fit_dir)
        result: List[Dict[str, Any]] = []
        for kind in kinds:
            dim = fit_report["dim"] if kind == "reid" else size["dim"]
            print(f"bench scale: {opts.size}: {size['queries']} queries x {size['gallery']} gallery, {dim}-d, "
                  f"{size['ids']} identities, {kind} features, {opts.threads} thread(s), load "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
            result += run(opts.size, rows, opts.threads, nprobes, features=kind, fit_path=fit_path, nlists=nlists,
                          hnsw_m=opts.hnsw_m, ef_construction=opts.ef_construction, ef_search=ef_search,
                          candidates=opts.candidates, metrics=not opts.no_metrics)
    print("\n".join(format_table(result)))
    if opts.output:
        from torchreid_privacy.utils.atomic import write_json

        write_json(opts.output, {"size": opts.size, **size, "threads": opts.threads, "features": kinds,
                                 "fit": fit_report, "rows": result})
        print(f"bench scale: {opts.output}")
    return 0


def _fit(opts: argparse.Namespace, fit_dir: str) -> Tuple[str, Dict[str, Any]]:
    """The fitted feature model's path (read, or fitted to the run and saved) and its report."""
    from torchreid_privacy.bench.feature_fit import FeatureModel

    source = opts.features_from
    if not os.path.exists(source):
        raise FileNotFoundError(f"--features-from: no such run or file: {source}")
    if source.endswith(".npz"):
        if opts.check_root:
            raise ValueError("--check-root: needs --features-from RUN (a trained run), not a fitted .npz")
        model = FeatureModel.load(source)
        report = dict(model.info.get("report") or {"dim": model.dim})
        report["dim"] = model.dim
        print(f"features from {source}: a fitted model, {model.dim}-d")
        return source, report
    import torch

    from torchreid_privacy.bench.run_crops import fit_run, report_lines

    torch.set_num_threads(opts.threads)
    model, report = fit_run(source, crops_per_image=opts.crops_per_image, check_root=opts.check_root)
    print("\n".join(report_lines(report)), flush=True)
    path = os.path.join(fit_dir, "fit.npz")
    model.save(path)
    if opts.save_fit:
        model.save(opts.save_fit)
        print(f"fitted feature model: {opts.save_fit}")
    return path, report
