"""CLIP embeddings beside image shards, as clip-retrieval keeps them, and the record of the model that made them.

A folder of embeddings holds, per shard NAME, ``img_emb/img_emb_NAME.npy`` and
``text_emb/text_emb_NAME.npy`` (fp16, L2-normalised) and
``metadata/metadata_NAME.parquet``, row for row in the same order, plus
``embedding_model.json`` (``{"name", "pretrained", "checksums"}``): which CLIP
computed them, so a query is embedded by the same one. They are written by
sidecars of an image pass (:class:`~laion_hf.io.samples.Sidecar`):

- :class:`EmbeddingWriter` takes the embedding columns the CLIP stage put in
  the batch (the filter step);
- :class:`ConfigEmbeddings` carries a source folder's embeddings along for the
  rows a later pass keeps (a build's configs), so every config has exactly its
  own rows' embeddings and an index of it serves nothing the config removed.

Memory holds one shard's embeddings (rows x dim x 2 bytes x 2).
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.core.stage import DROP_REASON, alive_mask
from laion_hf.io.atomic import atomic_path, join, write_json
from laion_hf.io.samples import IMAGE, IMAGE_EXT

IMAGE_EMBEDDING = "image_embedding"
TEXT_EMBEDDING = "text_embedding"
FOLDERS = {IMAGE_EMBEDDING: "img_emb", TEXT_EMBEDDING: "text_emb"}
METADATA = "metadata"
MODEL_RECORD = "embedding_model.json"


def write_model_record(output_dir: str, record: dict[str, Any]) -> None:
    """``embedding_model.json``: the CLIP (name, pretrained tag or file, weights sha256) that made the embeddings."""
    write_json(join(output_dir, MODEL_RECORD), record)


class _ShardEmbeddings:
    """The kept rows' embeddings and metadata of one shard, written atomically on close."""

    def __init__(self, output_dir: str, name: str) -> None:
        self.output_dir = output_dir
        self.name = name
        self.parts: dict[str, list[np.ndarray]] = {column: [] for column in FOLDERS}
        self.metadata: list[pa.Table] = []

    def add_metadata(self, kept: pa.Table) -> None:
        drop = [IMAGE, IMAGE_EXT, *FOLDERS, DROP_REASON]
        self.metadata.append(kept.drop_columns([c for c in drop if c in kept.column_names]))

    def close(self) -> None:
        for column, folder in FOLDERS.items():
            parts = self.parts[column]
            array = np.concatenate(parts) if parts else np.zeros((0, 0), np.float16)
            with atomic_path(join(self.output_dir, folder, f"{folder}_{self.name}.npy")) as tmp:
                with fsspec.open(tmp, "wb") as f:
                    np.save(f, array)
        with atomic_path(join(self.output_dir, METADATA, f"{METADATA}_{self.name}.parquet")) as tmp:
            table = pa.concat_tables(self.metadata, promote_options="default") if self.metadata else pa.table({})
            pq.write_table(table, tmp)


class EmbeddingWriter(_ShardEmbeddings):
    """Sidecar: moves the embedding columns of the kept rows out of the batch into clip-retrieval files."""

    def take(self, batch: pa.Table) -> pa.Table:
        kept = batch.filter(alive_mask(batch))
        for column, parts in self.parts.items():
            values = kept[column].combine_chunks()
            parts.append(values.flatten().to_numpy(zero_copy_only=False).reshape(-1, values.type.list_size).astype(np.float16))
        self.add_metadata(kept)
        return batch.drop_columns(list(FOLDERS))


class EmbeddingDropper:
    """Sidecar when no embeddings are wanted: the embedding columns never reach the shard's metadata."""

    def __init__(self, output_dir: str, name: str) -> None:
        """Takes the sidecar factory's arguments; writes nothing."""

    def take(self, batch: pa.Table) -> pa.Table:
        return batch.drop_columns(list(FOLDERS))

    def close(self) -> None:
        """Nothing to write."""


class ConfigEmbeddings(_ShardEmbeddings):
    """Sidecar: the rows this pass keeps get their embeddings from ``source`` (a folder as described above).

    Rows are matched by key, so the order of the source does not matter; a kept
    row without an embedding in the source is an error (the source is not the
    pass's input's).
    """

    def __init__(self, source: str, output_dir: str, name: str) -> None:
        super().__init__(output_dir, name)
        self.source = source
        keys = pq.read_table(join(source, METADATA, f"{METADATA}_{name}.parquet"), columns=["key"])["key"]
        self.row_of = {key: row for row, key in enumerate(keys.cast(pa.string()).to_pylist())}
        self.vectors = {
            column: np.load(join(source, folder, f"{folder}_{name}.npy"), mmap_mode="r")
            for column, folder in FOLDERS.items()
        }

    @classmethod
    def factory(cls, source: str):
        """A sidecar factory (``(output_dir, name) -> sidecar``) that also copies the model record once."""
        return functools.partial(_config_embeddings, source)

    def take(self, batch: pa.Table) -> pa.Table:
        kept = batch.filter(alive_mask(batch))
        keys = kept["key"].cast(pa.string()).to_pylist()
        missing = [key for key in keys if key not in self.row_of]
        if missing:
            raise ValueError(f"{self.source}: no embedding for key {missing[0]} of shard {self.name}")
        rows = np.array([self.row_of[key] for key in keys], np.int64)
        for column, parts in self.parts.items():
            parts.append(np.asarray(self.vectors[column][rows], np.float16))
        self.add_metadata(kept)
        return batch


def _config_embeddings(source: str, output_dir: str, name: str) -> ConfigEmbeddings:
    record = Path(source) / MODEL_RECORD
    target = Path(output_dir) / MODEL_RECORD
    if record.exists() and not target.exists():
        with atomic_path(str(target)) as tmp:
            shutil.copyfile(record, tmp)
    return ConfigEmbeddings(source, output_dir, name)
