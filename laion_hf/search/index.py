"""A kNN index over one config's CLIP embeddings: build it in bounded memory, measure it, open it memory-mapped.

An index folder holds::

    image.index        faiss index of the image embeddings (inner product = cosine)
    text.index         the same for the caption embeddings, when the source has them
    metadata.arrow     url, caption, key, scores... row for row with the vectors (Arrow IPC, memory-mapped)
    index_info.json    model, dimension, rows, per index: factory, search parameters, recall@10, build seconds

``index_info.json`` is written last and removed first on a rebuild, so a folder
with it is complete. The factory is chosen by size the way autofaiss chooses
(``get_optimal_index_keys_v2``), restricted to indices faiss can memory-map:
``Flat`` for small sets (exact), then an inverted file (IVF, 4*sqrt(n) lists
rounded to a power of two) whose codes are the largest that fit
``max_memory``: fp16 scalars (lossless against the fp16 embeddings), 8-bit
scalars, then OPQ + product quantisation (without faiss's polysemous training). The coarse quantiser is trained on a
random sample (40 points per list) and vectors are added a chunk at a time,
so memory is the index plus one chunk. The number of lists probed is tuned
until recall@10 against exact search reaches ``target_recall`` (plus a margin)
on one sample of queries, and the recall written down is measured on another.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from laion_hf.core.errors import UserError
from laion_hf.io.atomic import atomic_path, read_json, write_json
from laion_hf.search.source import EmbeddingSource, SourceError, open_source

FORMAT = "laion-hf-knn/1"
INFO_FILE = "index_info.json"
METADATA_FILE = "metadata.arrow"
RECALL_K = 10
FLAT_BELOW = 10_000
DEFAULT_MAX_MEMORY = 16 << 30  # autofaiss's default max_index_memory_usage
TRAIN_POINTS_PER_LIST = 40  # faiss warns below 39 points per centroid
TRAIN_MEMORY = 2 << 30
TRAIN_ITERATIONS = 10  # k-means iterations for the coarse quantiser (faiss's default 25 buys little for IVF)
ADD_ROWS = 65_536
QUERY_ROWS = 1_000  # half to tune the search parameters, half to measure recall
TUNE_MARGIN = 0.01  # tune a little above the target so the held-out half reaches it too
HNSW_COARSE_ABOVE = 4_096  # more lists than this: an HNSW graph finds the nearest lists


class KnnIndexError(UserError):
    """An index folder that cannot be built or opened; the message names the file."""


@dataclass
class VectorIndexInfo:
    """What one faiss index is and how well it does."""

    file: str
    factory: str
    search_params: str
    recall_at_10: float
    recall_queries: int
    build_seconds: float
    bytes: int = 0


@dataclass
class IndexInfo:
    """``index_info.json``: everything needed to trust, search and describe an index."""

    model: dict[str, Any]  # name, pretrained, checksums (weights file -> sha256), as recorded at build
    dimension: int
    rows: int
    config: str
    source: str
    columns: list[str]
    indices: dict[str, VectorIndexInfo]
    shards: list[dict[str, Any]] = field(default_factory=list)
    images: str | None = None
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, folder: Path) -> IndexInfo:
        path = folder / INFO_FILE
        if not path.exists():
            raise KnnIndexError(f"{folder}: not a laion-hf index ({INFO_FILE} is missing; build one with laion-hf index)")
        try:
            data = read_json(str(path))
            if data.get("format") != FORMAT:
                raise KnnIndexError(f"{path}: format {data.get('format')!r}, this laion-hf reads {FORMAT!r}")
            data["indices"] = {k: VectorIndexInfo(**v) for k, v in data["indices"].items()}
            return cls(**data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise KnnIndexError(f"{path}: not a valid index description ({exc})") from exc


def lists_for(rows: int) -> int:
    """Inverted lists for ``rows`` vectors: 4*sqrt(n) rounded to a power of two (faiss's guideline, autofaiss's rule)."""
    return int(min(2 ** round(math.log2(4 * math.sqrt(rows))), 1 << 16))


def choose_factory(rows: int, dimension: int, max_memory: int = DEFAULT_MAX_MEMORY) -> str:
    """The faiss factory string for ``rows`` vectors of ``dimension`` within ``max_memory`` bytes."""
    if rows < FLAT_BELOW:
        return "Flat"
    lists = lists_for(rows)
    coarse = f"IVF{lists}_HNSW32" if lists > HNSW_COARSE_ABOVE else f"IVF{lists}"
    centroids = lists * dimension * 4
    for codes, size in (("SQfp16", 2 * dimension), ("SQ8", dimension)):
        if rows * (size + 8) + centroids <= max_memory:
            return f"{coarse},{codes}"
    for m in (256, 128, 64, 48, 32, 24, 16, 8, 4):
        if m < dimension and dimension % m == 0 and rows * (m + 8) + centroids + dimension**2 * 4 <= max_memory:
            return f"OPQ{m},{coarse},PQ{m}x8np"  # np: no polysemous training (minutes of annealing, unused here)
    raise KnnIndexError(f"{rows:,} vectors of dimension {dimension} do not fit in {max_memory:,} bytes even as PQ4 codes; "
                      "raise --max-memory")


@contextmanager
def faiss_threads(threads: int | None):
    """Run faiss with ``threads`` OpenMP threads (None: its default), restored afterwards."""
    import faiss

    before = faiss.omp_get_max_threads()
    if threads:
        faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    faiss.normalize_L2(vectors)
    return vectors


def exact_neighbours(source: EmbeddingSource, modality: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and row ids of the exact top ``k`` by inner product, streaming the vectors a chunk at a time."""
    import faiss

    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.full((len(queries), k), -1, np.int64)
    offset = 0
    for chunk in source.chunks(modality, ADD_ROWS):
        scores, ids = faiss.knn(queries, _normalised(chunk), min(k, len(chunk)), metric=faiss.METRIC_INNER_PRODUCT)
        scores = np.concatenate([best_scores, scores], axis=1)
        ids = np.concatenate([best_ids, ids + offset], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best_scores, best_ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        offset += len(chunk)
    return best_scores, best_ids


def _without_self(ids: np.ndarray, query_ids: np.ndarray, k: int) -> list[np.ndarray]:
    """Each row's ids other than the query's own row (a query found itself tells nothing), first ``k``."""
    return [row[(row != own) & (row >= 0)][:k] for row, own in zip(ids, query_ids)]


class _RecallProbe:
    """Queries drawn from the index's own rows, with their exact neighbours (self excluded).

    Recall@k counts a returned row as a true neighbour when its exact score
    reaches the exact k-th score: rows with identical embeddings (repeated
    captions) are interchangeable, and which of them an index returns is no error.
    """

    def __init__(self, source: EmbeddingSource, modality: str, seed: int) -> None:
        rng = np.random.default_rng(seed + 1)
        count = min(QUERY_ROWS, source.rows)
        self.source, self.modality = source, modality
        self.ids = np.sort(rng.choice(source.rows, count, replace=False))
        self.k = min(RECALL_K, source.rows - 1)
        self.queries = _normalised(source.take(modality, self.ids))
        scores, ids = exact_neighbours(source, modality, self.queries, self.k + 1)
        not_self = ids != self.ids[:, None]
        self.kth = np.array([row[mask][: self.k][-1] if self.k else np.inf for row, mask in zip(scores, not_self)])
        halves = rng.permutation(count)
        self.tune, self.measure = np.sort(halves[: count // 2]), np.sort(halves[count // 2 :])

    def recall(self, index, part: np.ndarray) -> float:
        if not self.k:
            return 1.0
        _, ids = index.search(self.queries[part], self.k + 1)
        found = _without_self(ids, self.ids[part], self.k)
        returned = np.unique(np.concatenate(found))
        vectors = _normalised(self.source.take(self.modality, returned))
        shares = []
        for query, row in zip(part, found):
            exact = vectors[np.searchsorted(returned, row)] @ self.queries[query]
            shares.append(np.sum(exact >= self.kth[query] - 1e-5) / self.k)
        return float(np.mean(shares))


def _search_params(index, nprobe: int) -> str:
    import faiss

    ivf = faiss.extract_index_ivf(index)
    params = f"nprobe={nprobe}"
    if isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSW):
        params += f",quantizer_efSearch={max(2 * nprobe, 64)}"
    return params


def apply_search_params(index, params: str) -> None:
    import faiss

    if params:
        faiss.ParameterSpace().set_index_parameters(index, params)


def _tune(index, probe: _RecallProbe, target: float) -> str:
    """The fewest lists probed (doubling) whose recall reaches ``target``, or where recall stops improving."""
    import faiss

    try:
        lists = faiss.extract_index_ivf(index).nlist
    except RuntimeError:
        return ""  # not an inverted file (Flat): exact, nothing to tune
    nprobe, previous = 1, -1.0
    while True:
        params = _search_params(index, nprobe)
        apply_search_params(index, params)
        reached = probe.recall(index, probe.tune)
        if reached >= min(target + TUNE_MARGIN, 1.0) or nprobe >= lists or (nprobe >= 16 and reached - previous < 0.002):
            return params
        nprobe, previous = nprobe * 2, reached


def _sample(source: EmbeddingSource, modality: str, rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return _normalised(source.take(modality, np.sort(rng.choice(source.rows, rows, replace=False))))


def build_vector_index(
    source: EmbeddingSource, modality: str, factory: str, *, target_recall: float = 0.95, seed: int = 0
):
    """A trained, filled and tuned faiss index of one modality, with its measured recall."""
    import faiss

    started = time.perf_counter()
    index = faiss.index_factory(source.dimension, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.niter = TRAIN_ITERATIONS
        wanted = max(TRAIN_POINTS_PER_LIST * ivf.nlist, 256 * 40 if "PQ" in factory else 0)
        train_rows = min(source.rows, wanted, TRAIN_MEMORY // (4 * source.dimension))
        index.train(_sample(source, modality, train_rows, seed))
    for chunk in source.chunks(modality, ADD_ROWS):
        index.add(_normalised(chunk))
    probe = _RecallProbe(source, modality, seed)
    params = _tune(index, probe, target_recall)
    measured = probe.recall(index, probe.measure)
    return index, VectorIndexInfo(
        file=f"{modality}.index",
        factory=factory,
        search_params=params,
        recall_at_10=round(measured, 4),
        recall_queries=len(probe.measure),
        build_seconds=round(time.perf_counter() - started, 3),
    )


def _model_record(source: EmbeddingSource, model: str | None, pretrained: str | None) -> dict[str, Any]:
    """Which CLIP made the embeddings: the record beside them, or what the user says (never a guess)."""
    recorded = source.model
    if recorded and model and recorded["name"] != model:
        raise KnnIndexError(f"{source.folder}: embeddings were computed with {recorded['name']!r} "
                          f"(embedding_model.json), not --model {model!r}")
    if recorded:
        return {"name": recorded["name"], "pretrained": recorded.get("pretrained"),
                "checksums": recorded.get("checksums", {})}
    if not model:
        raise KnnIndexError(f"{source.folder}: no embedding_model.json says which CLIP computed these embeddings; "
                          "pass --model (the one laion-hf filter ran, e.g. laion-hf-tiny or ViT-B-32)")
    return {"name": model, "pretrained": pretrained, "checksums": {}}


def _write_metadata(source: EmbeddingSource, path: Path) -> int:
    """Stream the display columns of every shard into one Arrow IPC file (memory-mapped when searched)."""
    rows, writer = 0, None
    with atomic_path(str(path)) as tmp:
        with pa.OSFile(tmp, "wb") as sink:
            for batch in source.metadata_batches():
                if writer is None:
                    writer = pa.ipc.new_file(sink, batch.schema)
                writer.write_table(batch)
                rows += batch.num_rows
            writer.close()
    return rows


def build_index(
    embeddings: str | Path,
    output: str | Path,
    *,
    config: str | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
    factory: str | None = None,
    target_recall: float = 0.95,
    threads: int | None = None,
    seed: int = 0,
) -> IndexInfo:
    """Index the embeddings of ``config`` under ``embeddings`` into the folder ``output``."""
    import faiss

    source = open_source(embeddings, config)
    model_record = _model_record(source, model, pretrained)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / INFO_FILE).unlink(missing_ok=True)  # the folder is not an index until this build finishes
    chosen = factory or choose_factory(source.rows, source.dimension, max_memory)
    indices = {}
    with faiss_threads(threads):
        for modality in source.modalities:
            try:
                index, info = build_vector_index(source, modality, chosen, target_recall=target_recall, seed=seed)
            except RuntimeError as exc:  # faiss: a factory string it cannot parse or too few rows to train
                raise KnnIndexError(f"{source.folder}: faiss cannot build {chosen!r} over {source.rows:,} rows: {exc}") from exc
            with atomic_path(str(output / info.file)) as tmp:
                faiss.write_index(index, tmp)
            info.bytes = (output / info.file).stat().st_size
            indices[modality] = info
    metadata_rows = _write_metadata(source, output / METADATA_FILE)
    if metadata_rows != source.rows:
        raise SourceError(f"{source.folder}: metadata has {metadata_rows} rows for {source.rows} vectors")
    for stale in {"image.index", "text.index"} - {i.file for i in indices.values()}:
        (output / stale).unlink(missing_ok=True)
    info = IndexInfo(
        model=model_record,
        dimension=source.dimension,
        rows=source.rows,
        config=source.config,
        source=str(source.folder.resolve()),
        columns=source.columns,
        indices=indices,
        shards=[{"name": s.name, "rows": s.rows} for s in source.shards],
        images=str(source.image_folder.resolve()) if source.image_folder else None,
    )
    write_json(str(output / INFO_FILE), info.to_dict())
    return info


class KnnIndex:
    """An index folder opened for search: faiss indices and metadata memory-mapped, nothing loaded whole."""

    def __init__(self, folder: str | Path) -> None:
        import faiss

        self.folder = Path(folder)
        self.info = IndexInfo.read(self.folder)
        self.indices = {}
        for modality, entry in self.info.indices.items():
            path = self.folder / entry.file
            flags = faiss.IO_FLAG_MMAP_IFC if entry.factory == "Flat" else faiss.IO_FLAG_MMAP
            try:
                index = faiss.read_index(str(path), flags | faiss.IO_FLAG_READ_ONLY)
            except RuntimeError as exc:
                raise KnnIndexError(f"{path}: not a readable faiss index (corrupt or truncated?): "
                                    f"{str(exc).strip().splitlines()[-1]}") from exc
            if index.ntotal != self.info.rows or index.d != self.info.dimension:
                raise KnnIndexError(f"{path}: {index.ntotal} vectors of dimension {index.d}, "
                                    f"{INFO_FILE} says {self.info.rows} of {self.info.dimension}")
            apply_search_params(index, entry.search_params)
            self.indices[modality] = index
        path = self.folder / METADATA_FILE
        try:
            self.metadata = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        except (pa.ArrowInvalid, OSError) as exc:
            raise KnnIndexError(f"{path}: not a readable Arrow file (corrupt or truncated?): {exc}") from exc
        if self.metadata.num_rows != self.info.rows:
            raise KnnIndexError(f"{path}: {self.metadata.num_rows} rows, {INFO_FILE} says {self.info.rows}")

    @property
    def name(self) -> str:
        return self.info.config

    def search(self, modality: str, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores (cosine) and row ids of the ``k`` nearest rows per query; id -1 where fewer were found."""
        if modality not in self.indices:
            raise KnnIndexError(f"{self.folder}: no {modality} index (it has: {', '.join(self.indices)})")
        return self.indices[modality].search(_normalised(vectors), min(k, self.info.rows))

    def rows(self, ids: list[int]) -> list[dict[str, Any]]:
        """The metadata rows of ``ids``, in that order."""
        return self.metadata.take(pa.array(ids, pa.int64())).to_pylist()
