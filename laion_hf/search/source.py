"""Where an index's vectors come from: clip-retrieval embedding folders, one per config.

``laion-hf filter`` writes the embeddings of its kept samples as clip-retrieval
does: ``img_emb/img_emb_NNNNN.npy`` and ``text_emb/text_emb_NNNNN.npy`` (fp16,
L2-normalised) and ``metadata/metadata_NNNNN.parquet``, row for row in the same
order. A build publishes one such folder per config (``OUTPUT/.../<config>/``);
:func:`embedding_folders` finds them under any root, so pointing ``laion-hf
index`` at a filter output, a config folder or a whole build is the same call.

:func:`open_source` lists the shards and checks what an index relies on: every
vector file has its metadata, the row counts agree, every shard has one
dimension. Nothing is loaded: vectors are read memory-mapped, a chunk at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.core.errors import UserError
from laion_hf.core.schema import resolve_columns
from laion_hf.io.embeddings import FOLDERS, IMAGE_EMBEDDING, METADATA, MODEL_RECORD, TEXT_EMBEDDING

IMAGE, TEXT = "image", "text"
MODALITY_FOLDERS = {IMAGE: FOLDERS[IMAGE_EMBEDDING], TEXT: FOLDERS[TEXT_EMBEDDING]}
METADATA_FOLDER = METADATA
#: Metadata columns an index carries, canonical name -> Arrow type; each where present.
DISPLAY_COLUMNS: dict[str, pa.DataType] = {
    "url": pa.string(),
    "caption": pa.string(),
    "key": pa.string(),
    "language": pa.string(),
    "similarity": pa.float32(),
    "punsafe": pa.float32(),
    "pwatermark": pa.float32(),
    "aesthetic": pa.float32(),
}
_MAX_DEPTH = 4


class SourceError(UserError):
    """An embeddings folder that cannot be indexed as it is."""


@dataclass(frozen=True)
class EmbeddingShard:
    """One shard of a clip-retrieval folder: its vector files and metadata, ``rows`` long."""

    name: str
    vectors: dict[str, Path]  # modality -> .npy
    metadata: Path
    rows: int

    def read(self, modality: str) -> np.ndarray:
        """The shard's vectors of ``modality``, memory-mapped (fp16 as written)."""
        return _load_npy(self.vectors[modality])


@dataclass
class EmbeddingSource:
    """A checked clip-retrieval folder: shards in order, the dimension, the metadata columns present."""

    folder: Path
    config: str
    shards: list[EmbeddingShard]
    dimension: int
    modalities: list[str]
    columns: list[str] = field(default_factory=list)  # canonical display columns present in some shard
    model: dict | None = None  # the MODEL_RECORD beside the embeddings, if any

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def image_folder(self) -> Path | None:
        """The folder of the image tars these rows came from, when they sit beside the embeddings."""
        return self.folder if any(self.folder.glob("*.tar")) else None

    def chunks(self, modality: str, rows: int) -> Iterator[np.ndarray]:
        """All vectors of ``modality`` in row order, as float32 chunks of at most ``rows`` rows."""
        for shard in self.shards:
            vectors = shard.read(modality)
            for start in range(0, shard.rows, rows):
                yield np.asarray(vectors[start : start + rows], dtype=np.float32)

    def take(self, modality: str, ids: np.ndarray) -> np.ndarray:
        """The float32 vectors of the (sorted) global row ``ids``, read shard by shard."""
        parts, offset = [], 0
        for shard in self.shards:
            inside = ids[(ids >= offset) & (ids < offset + shard.rows)] - offset
            if len(inside):
                parts.append(np.asarray(shard.read(modality)[inside], dtype=np.float32))
            offset += shard.rows
        return np.concatenate(parts) if parts else np.zeros((0, self.dimension), np.float32)

    def metadata_batches(self) -> Iterator[pa.Table]:
        """Per shard: the display columns under canonical names and types, plus ``shard``."""
        for shard in self.shards:
            table = _read_parquet(shard.metadata)
            actual = resolve_columns(table.column_names, self.columns)
            columns = {}
            for canonical in self.columns:
                kind = DISPLAY_COLUMNS[canonical]
                if actual[canonical] is not None:
                    columns[canonical] = table[actual[canonical]].cast(kind)
                else:  # another shard has this column: nulls keep every shard one schema
                    columns[canonical] = pa.nulls(table.num_rows, kind)
            columns["shard"] = pa.array([shard.name] * table.num_rows, pa.string())
            yield pa.table(columns)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise SourceError(f"{path}: not a readable .npy embedding file ({exc})") from exc


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: not a readable parquet file ({exc})") from exc


def _parquet_rows_and_names(path: Path) -> tuple[int, list[str]]:
    try:
        meta = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: not a readable parquet file ({exc})") from exc
    return meta.metadata.num_rows, meta.schema_arrow.names


def is_embedding_folder(folder: Path) -> bool:
    return (folder / MODALITY_FOLDERS[IMAGE]).is_dir()


def embedding_folders(root: str | Path) -> dict[str, Path]:
    """Every clip-retrieval folder at or under ``root``, by config name (the folder's name).

    A build keeps one per config (``.../<config>/img_emb/``); a filter output
    is one itself. Hidden folders are bookkeeping and are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"{root}: not a directory")
    if is_embedding_folder(root):
        return {root.resolve().name: root}
    found: dict[str, Path] = {}
    frontier = [root]
    for _ in range(_MAX_DEPTH):
        next_frontier = []
        for folder in frontier:
            for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
                if is_embedding_folder(child):
                    if child.name in found:
                        raise SourceError(f"{root}: two embedding folders named {child.name!r}: {found[child.name]} and {child}")
                    found[child.name] = child
                else:
                    next_frontier.append(child)
        frontier = next_frontier
    return found


def select_folder(root: str | Path, config: str | None = None) -> tuple[str, Path]:
    """The embeddings folder of ``config`` under ``root`` (the only one when ``config`` is None)."""
    folders = embedding_folders(root)
    if not folders:
        raise SourceError(f"{root}: no clip-retrieval embeddings (img_emb/) in it or below it; run laion-hf filter first")
    if config is None:
        if len(folders) > 1:
            raise SourceError(f"{root}: embeddings of several configs ({', '.join(folders)}); pass --config NAME")
        return next(iter(folders.items()))
    if config not in folders:
        raise SourceError(f"{root}: unknown config {config!r}; it has embeddings of: {', '.join(folders)}")
    return config, folders[config]


def _shard_name(path: Path, prefix: str) -> str:
    return path.stem[len(prefix) + 1 :] if path.stem.startswith(prefix + "_") else path.stem


def read_model_record(folder: Path) -> dict | None:
    """The model record beside the embeddings (``{"name", "pretrained", "checksums"}``), if one was written."""
    path = folder / MODEL_RECORD
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(record, dict) or not isinstance(record.get("name"), str):
        raise SourceError(f"{path}: expected an object with a 'name' (the CLIP that computed the embeddings)")
    return record


def open_source(root: str | Path, config: str | None = None) -> EmbeddingSource:
    """Find and check the embeddings folder of ``config`` under ``root`` (see the module docstring)."""
    config, folder = select_folder(root, config)
    image_files = {_shard_name(p, "img_emb"): p for p in sorted((folder / "img_emb").glob("*.npy"))}
    text_files = {_shard_name(p, "text_emb"): p for p in sorted((folder / "text_emb").glob("*.npy"))}
    modalities = [IMAGE] + ([TEXT] if text_files else [])
    if text_files and set(text_files) != set(image_files):
        only = sorted(set(image_files) ^ set(text_files))
        raise SourceError(f"{folder}: img_emb/ and text_emb/ hold different shards (unpaired: {', '.join(only)})")
    shards, dimension, present = [], None, set()
    for name, image_path in sorted(image_files.items()):
        metadata = folder / METADATA_FOLDER / f"metadata_{name}.parquet"
        if not metadata.exists():
            raise SourceError(f"{image_path}: no metadata for it ({metadata} is missing)")
        rows, names = _parquet_rows_and_names(metadata)
        vectors = {IMAGE: image_path, **({TEXT: text_files[name]} if text_files else {})}
        for path in vectors.values():
            array = _load_npy(path)
            if array.size == 0 and rows == 0:
                continue  # a shard whose rows were all removed
            if array.ndim != 2 or array.shape[0] != rows:
                raise SourceError(f"{path}: {array.shape[0] if array.ndim else 0} vectors but {metadata.name} has {rows} rows")
            if dimension is None:
                dimension = array.shape[1]
            elif array.shape[1] != dimension:
                raise SourceError(f"{path}: dimension {array.shape[1]}, other shards have {dimension}")
        present |= {canonical for canonical, actual in resolve_columns(names, DISPLAY_COLUMNS).items() if actual}
        if rows:
            shards.append(EmbeddingShard(name, vectors, metadata, rows))
    if not shards:
        raise SourceError(f"{folder}: no embeddings in img_emb/ (no rows to index)")
    columns = [c for c in DISPLAY_COLUMNS if c in present]
    return EmbeddingSource(folder, config, shards, dimension, modalities, columns, read_model_record(folder))
