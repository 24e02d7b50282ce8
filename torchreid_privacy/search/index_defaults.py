"""The index kinds of ``search --index`` and their default options, without faiss or torch: the CLI's
help reads them when it builds its parser, and :mod:`.gallery_index` builds with them.

The HNSW defaults were measured with ``bench scale --size million --features-from RUN`` (ReID-like
256-d features fitted to the quickstart run, 1,000 queries x 1,000,000 images, 2 cores): M 32,
efConstruction 40 builds in about 4 minutes, and efSearch 128 is the smallest breadth of the sweep
(16 .. 256) that finds >= 0.95 of the true matches in the exact top 10 (0.953, 21x the exact
search's queries per second; 256: 0.984, 14x). M 16 builds in 2 minutes but needs efSearch 512
for 0.957 (16x); efConstruction 80 found no more at 100,000 images and builds slower.
"""
INDEX_KINDS = ("flat", "ivf", "ivfpq", "hnsw")
NPROBE = 16
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 128
