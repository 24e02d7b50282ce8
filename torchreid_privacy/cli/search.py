"""``search`` (rank a gallery folder for query images with the run's C) and ``visualize`` (rank
lists of the four settings, t-SNE and O | M | P | R grid of a run's test split)."""
from __future__ import annotations

import argparse

from torchreid_privacy.search.index_defaults import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, INDEX_KINDS, NPROBE

from .common import add_config_args, add_key_arg, default_device, read_key


def add_parsers(sub) -> None:
    p = sub.add_parser("search", help="search a gallery folder (raw or protected) with query images")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    p.add_argument("--query", required=True, help="folder of query images (raw O; never written to)")
    p.add_argument("--gallery", required=True, help="folder of gallery images (never written to)")
    p.add_argument("--output", required=True, help="gets ranks.json, ranks.csv, ranklists/*.png (must be "
                                                   "outside the input folders; no symbolic links)")
    p.add_argument("--overwrite", action="store_true", help="replace the ranks.json, ranks.csv and ranklists/ a "
                                                            "previous search left in OUTPUT (removed before the run; "
                                                            "its cache/ is kept); without it such an OUTPUT is refused")
    p.add_argument("--topk", type=int, default=10, help="gallery images listed per query (default 10)")
    p.add_argument("--gallery-protected", action="store_true", help="the gallery holds P already (O->P)")
    p.add_argument("--protect-gallery", action="store_true", help="apply G to the gallery first (O->P)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=default_device())
    p.add_argument("--cache", metavar="DIR", help="feature cache folder (default: OUTPUT/cache); share it "
                                                  "between runs to embed a gallery once")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    p.add_argument("--no-png", action="store_true", help="skip the per-query rank-list PNGs")
    p.add_argument("--index", choices=list(INDEX_KINDS),
                   help="rank through a faiss index saved beside the feature cache and rebuilt only when the "
                        "gallery's features (or the build flags) change. Which to use when: flat: exact, the "
                        "same lists as without --index, for any gallery that fits in memory; hnsw: a graph, "
                        "the fastest at high recall on large galleries (a million ReID-like features, 2 cores: "
                        "0.95 of the true matches in the top 10 at 21x exact's speed with --ef-search 128, built "
                        "in 4 min; memory: a copy of the features plus 2 x --hnsw-m links each); ivf: cells of "
                        "the gallery, built in 1 min at a million, recall set by --nprobe (there: 128 for 0.95, "
                        "16x); ivfpq: ivf with compressed codes, for galleries whose features do not fit in "
                        "memory (the lowest recall: raise --candidates). `bench scale` measures them on your "
                        "features. Default: every query against every gallery image")
    p.add_argument("--nprobe", type=int, default=NPROBE, help=f"ivf/ivfpq: cells searched per query (default "
                                                               f"{NPROBE}); more: higher recall, slower (a million "
                                                               "images: 128)")
    p.add_argument("--nlist", type=int, default=0, help="ivf/ivfpq: cells of the index (default 0: about "
                                                        "4 sqrt(gallery), or the saved index's)")
    p.add_argument("--hnsw-m", type=int, default=0, help=f"hnsw: links per vector (default 0: {HNSW_M}, or the "
                                                         "saved index's)")
    p.add_argument("--ef-construction", type=int, default=0, help=f"hnsw: candidates while linking (default 0: "
                                                                  f"{HNSW_EF_CONSTRUCTION}, or the saved index's)")
    p.add_argument("--ef-search", type=int, default=HNSW_EF_SEARCH, help=f"hnsw: search breadth per query "
                                                                         f"(default {HNSW_EF_SEARCH}); more: higher "
                                                                         "recall, slower")
    p.add_argument("--candidates", type=int, default=0, help="candidates the index proposes per query, re-ranked "
                                                             "with the exact distances (default 0: --topk)")
    p.set_defaults(func=search)

    p = sub.add_parser("visualize", help="rank lists (O->O, O->P, P->O, P->P), t-SNE and O|M|P|R grid of a "
                                         "run's test split")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    p.add_argument("--target", help="test target (default: the run's first)")
    p.add_argument("--output", required=True, help="folder for the PNGs")
    p.add_argument("--queries", type=int, default=4, help="queries shown in the four settings (default 4)")
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--identities", type=int, default=20, help="identities in the t-SNE (default 20)")
    add_key_arg(p, "optional: with it the grid shows R")
    add_config_args(p)
    p.set_defaults(func=visualize)


def search(args: argparse.Namespace) -> int:
    """Under torchrun the ranks share the feature extraction (each writes its cache shard); rank 0 ranks."""
    from torchreid_privacy.search.gallery_index import IndexOptions
    from torchreid_privacy.search.query import search as run_search
    from torchreid_privacy.utils import distributed

    if args.cache and args.no_cache:
        raise ValueError("--cache and --no-cache exclude each other")
    if distributed.launched_by_torchrun():
        distributed.init_from_env(use_gpu=str(args.device).startswith("cuda"))
    try:
        res = run_search(args.checkpoint, args.query, args.gallery, args.output, topk=args.topk,
                         gallery_protected=args.gallery_protected, protect_gallery=args.protect_gallery,
                         batch_size=args.batch_size, device=args.device,
                         cache=False if args.no_cache else (args.cache or True), pngs=not args.no_png,
                         index=args.index, nprobe=args.nprobe, overwrite=args.overwrite,
                         index_options=IndexOptions(nlist=args.nlist, hnsw_m=args.hnsw_m,
                                                    ef_construction=args.ef_construction, nprobe=args.nprobe,
                                                    ef_search=args.ef_search, candidates=args.candidates))
    finally:
        distributed.shutdown()
    if res is not None:  # rank 0 (or a single process)
        print("\n".join(res.summary_lines()))
    return 0


def visualize(args: argparse.Namespace) -> int:
    from torchreid_privacy.trained_run import TrainedRun
    from torchreid_privacy.folders.visualize import check_counts, view_lines, write_views

    check_counts(args.queries, args.topk, args.identities)  # before the run is loaded
    run = TrainedRun.open(args.checkpoint, args.opts, config_file=args.config_file)
    key = read_key(args, run.model.keyed, required=False)
    if key is not None:
        run.model.set_key(key)
    paths = write_views(run, args.output, args.target, queries=args.queries, topk=args.topk,
                        identities=args.identities)
    print("\n".join(view_lines(paths)))
    return 0
