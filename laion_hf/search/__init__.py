"""Search what you built: a kNN index per config over its CLIP embeddings, a query CLI and a local page.

- :mod:`laion_hf.search.source`: find and check clip-retrieval embedding folders (one per config).
- :mod:`laion_hf.search.index`: build an index (factory by size, bounded memory, recall@10 measured) and open it.
- :mod:`laion_hf.search.query`: embed a text or an image with the index's own model and search with filters.
- :mod:`laion_hf.search.hub`: open an index pushed next to a dataset (``hf://datasets/REPO/PATH``).
- :mod:`laion_hf.search.server`: ``laion-hf serve``, the search page and a knn-service style JSON API.
"""
