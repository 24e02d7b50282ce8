"""Search a gallery with a trained run's C: the query (``query.search``), the per-file feature cache
(``feature_cache``) and the saved faiss/exact indexes (``gallery_index``)."""
