"""``torchreid-privacy bench scale``: evaluation and search at MSMT17's size and at a million images.

Why: the four-setting evaluation once built each setting's whole distance matrix (3.8 GB at
MSMT17's 11,659 x 82,161), and a city's gallery is millions of crops. This bench measures, on
synthetic identity-clustered features (identity centres plus noise, P = O plus more noise):

- ``eval-whole``: the old path, per setting the whole distance matrix, then ``evaluate_rank``;
- ``eval-streamed``: :func:`evaluate_settings`, one block of queries at a time;
- ``search-exact``: every query against every gallery feature, streamed (:func:`top_k_features`);
- ``flat``, ``ivf``, ``ivfpq``: the faiss indexes of ``search --index`` (build time, ms per
  query, recall@10 against ``search-exact``: of whole lists and of the same-identity matches in
  them), at each ``--nprobe`` of a comma-separated list.

Each row runs in a fresh process that first makes the features, then resets the kernel's
peak-memory mark (``/proc/self/clear_refs``) and reports its wall time and its peak resident
memory above the memory held at that point, i.e. above the features.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

SIZES: Dict[str, Dict[str, int]] = {
    "tiny": dict(queries=300, gallery=3000, dim=32, ids=300),  # the tests'
    "small": dict(queries=1000, gallery=20000, dim=128, ids=1000),
    "msmt17": dict(queries=11659, gallery=82161, dim=512, ids=3060),
    "million": dict(queries=1000, gallery=1_000_000, dim=512, ids=100_000),
}
DEFAULT_ROWS = {"tiny": ("eval-whole", "eval-streamed", "search-exact", "flat", "ivf", "ivfpq"),
                "small": ("eval-whole", "eval-streamed", "search-exact", "flat", "ivf", "ivfpq"),
                "msmt17": ("eval-whole", "eval-streamed", "search-exact", "flat", "ivf", "ivfpq"),
                "million": ("search-exact", "flat", "ivf", "ivfpq")}
ROWS = ("eval-whole", "eval-streamed", "search-exact", "flat", "ivf", "ivfpq")
TOPK = 10
SETTINGS4 = ("O->O", "O->P", "P->O", "P->P")


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


def make_features(size: Dict[str, int], seed: int = 0, block: int = 65536) -> Dict[str, Any]:
    """O and P features of query and gallery, ids and cameras; written block by block."""
    rng = np.random.default_rng(seed)
    d, n_ids = size["dim"], size["ids"]
    centres = rng.standard_normal((n_ids, d), dtype=np.float32)
    out: Dict[str, Any] = {}
    for side, n in (("query", size["queries"]), ("gallery", size["gallery"])):
        pids = rng.integers(0, n_ids, n)
        cams = rng.integers(0, 6, n)
        o = np.empty((n, d), np.float32)
        p = np.empty((n, d), np.float32)
        for start in range(0, n, block):
            stop = min(start + block, n)
            o[start:stop] = centres[pids[start:stop]] + 0.8 * rng.standard_normal((stop - start, d), dtype=np.float32)
            p[start:stop] = o[start:stop] + 0.8 * rng.standard_normal((stop - start, d), dtype=np.float32)
        out[side] = {"O": o, "P": p, "pids": pids, "cams": cams}
    return out


def _row(name: str, size: Dict[str, int], threads: int, work_dir: str, nprobes: Sequence[int]) -> Dict[str, Any]:
    """One row, in this (fresh) process."""
    import torch

    torch.set_num_threads(threads)
    feats = make_features(size)
    q, g = feats["query"], feats["gallery"]
    ids = (q["pids"], g["pids"], q["cams"], g["cams"])
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
        from torchreid_privacy.metrics.ranking import top_k_features

        idx, _ = top_k_features(torch.from_numpy(q["O"]), torch.from_numpy(g["O"]), TOPK)
        np.save(os.path.join(work_dir, "exact.npy"), idx)
        extra["ms_per_query"] = 1000 * (time.perf_counter() - t0) / len(q["O"])
    else:
        from torchreid_privacy.search.gallery_index import build, normalized

        gn = normalized(g["O"])
        index = build(gn, name, digest="bench")
        del gn
        exact_path = os.path.join(work_dir, "exact.npy")
        exact = np.load(exact_path) if os.path.exists(exact_path) else None
        probes = [None] if name == "flat" else list(dict.fromkeys(min(n, index.nlist) for n in nprobes))
        sweep = [_search_row(index, q["O"], g["O"], n, exact, (q["pids"], g["pids"])) for n in probes]
        extra.update(build_s=index.built_s, nlist=index.nlist, **sweep[0])
        if len(sweep) > 1:
            extra["sweep"] = sweep
    return {"row": name, "seconds": time.perf_counter() - t0, "peak_mb_above_features": max(0.0, peak_mb() - base),
            "features_mb": sum(a.nbytes for side in (q, g) for a in (side["O"], side["P"])) / 2**20, **extra}


def _search_row(index, qo: np.ndarray, go: np.ndarray, nprobe: Optional[int], exact: Optional[np.ndarray],
                pids: Sequence[np.ndarray]) -> Dict[str, Any]:
    """ms per query and, when the exact lists are known, recall@10 against them at one ``nprobe``:
    of all ten entries, and of the entries that are the query's identity (the matches ReID is
    after; the rest of an exact list is the nearest of unrelated identities, near-ties no index
    is built to find)."""
    import torch

    from torchreid_privacy.search.gallery_index import recall_at_k, search_top_k

    t0 = time.perf_counter()
    idx, _ = search_top_k(index, torch.from_numpy(qo), torch.from_numpy(go), TOPK, nprobe=nprobe or 1)
    out: Dict[str, Any] = {"nprobe": nprobe, "ms_per_query": 1000 * (time.perf_counter() - t0) / len(qo)}
    if exact is not None:
        out["recall_at_10"] = recall_at_k(idx, exact)
        same = pids[1][exact] == pids[0][:, None]
        found = np.array([np.isin(e, a) for e, a in zip(exact, idx)])
        out["match_recall_at_10"] = float(found[same].mean()) if same.any() else float("nan")
    return out


def _in_child(args) -> Dict[str, Any]:
    return _row(*args)


def run(size_name: str, rows: Sequence[str], threads: int, nprobes: Sequence[int] = (16,)) -> List[Dict[str, Any]]:
    size = SIZES[size_name]
    out = []
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as work:
        for name in rows:
            with ctx.Pool(1) as pool:  # a fresh process per row: its own peak memory
                out.append(pool.apply(_in_child, ((name, size, threads, work, tuple(nprobes)),)))
            print(format_row(out[-1]), flush=True)
    return out


def format_row(r: Dict[str, Any]) -> str:
    parts = [f"{r['row']:<14}", f"{r['seconds']:8.1f} s", f"peak +{r['peak_mb_above_features']:8.0f} MB"]
    if "ms_per_query" in r:
        parts.append(f"{r['ms_per_query']:8.2f} ms/query")
    if "build_s" in r:
        parts.append(f"build {r['build_s']:.1f} s")
    if r.get("nprobe"):
        parts.append(f"nlist {r['nlist']} nprobe {r['nprobe']}")
    if "recall_at_10" in r:
        parts.append(f"recall@10 {r['recall_at_10']:.3f} (matches {r['match_recall_at_10']:.3f})")
    for more in r.get("sweep", [])[1:]:  # the same index at the other nprobe values
        parts.append(f"| nprobe {more['nprobe']} {more['ms_per_query']:.2f} ms/query"
                     + (f" recall@10 {more['recall_at_10']:.3f} (matches {more['match_recall_at_10']:.3f})"
                        if "recall_at_10" in more else ""))
    if "O->P" in r:
        parts.append(f"O->P R1 {100 * r['O->P']['R1']:.1f} mAP {100 * r['O->P']['mAP']:.1f}")
    return "  ".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="torchreid-privacy bench scale", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="msmt17", choices=list(SIZES))
    parser.add_argument("--rows", default=None, help=f"comma-separated, of: {', '.join(ROWS)} (default by size)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--nprobe", default="16", help="ivf/ivfpq cells searched per query; a comma-separated "
                                                       "list sweeps one built index (e.g. 16,64,256)")
    parser.add_argument("--output", default=None, help="write the rows as JSON here")
    opts = parser.parse_args([] if argv is None else list(argv))
    rows = [r for r in (opts.rows.split(",") if opts.rows else DEFAULT_ROWS[opts.size]) if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"--rows: unknown row '{unknown[0]}' (of: {', '.join(ROWS)})")
    try:
        nprobes = [int(v) for v in opts.nprobe.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--nprobe: expected integers, got {opts.nprobe!r}")
    if opts.threads < 1 or not nprobes or min(nprobes) < 1:
        parser.error("--threads and --nprobe: expected >= 1")
    size = SIZES[opts.size]
    print(f"bench scale: {opts.size}: {size['queries']} queries x {size['gallery']} gallery, {size['dim']}-d, "
          f"{size['ids']} identities, {opts.threads} thread(s)")
    result = run(opts.size, rows, opts.threads, nprobes)
    if opts.output:
        from torchreid_privacy.utils.atomic import write_json

        write_json(opts.output, {"size": opts.size, **size, "threads": opts.threads, "rows": result})
        print(f"bench scale: {opts.output}")
    return 0
