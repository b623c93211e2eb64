"""A fix for ``datasets``' WebDataset streaming that could be proposed upstream, prototyped in this process only.

Where ``load_dataset(webdataset_repo, streaming=True)`` spends its time (py-spy
on ``bench/stream.py``'s folder, images as bytes): :mod:`tarfile`'s header
decode, whose ``calc_chksums`` unpacks every 512-byte header into two 504-item
tuples (~26 % with the rest of ``TarFile.next``), and the per-example
``Features.encode_example`` + ``decode_example`` a ``GeneratorBasedBuilder``
goes through when streamed (~22 %). The webdataset library pays the first and
not the second; the Parquet builder pays neither (it streams Arrow tables).

The two changes, each usable alone:

* :func:`iter_tar` for ``ArchiveIterable._iter_tar``: a sequential header walk
  (checksum as two C-level ``sum`` calls, GNU long names, PAX ``path``), yielding
  the same ``(name, file object)`` pairs, hidden files skipped as before;
* :class:`ArrowWebDataset`: the WebDataset builder as an ``ArrowBasedBuilder``
  whose ``_generate_tables`` groups the same samples into Arrow tables under the
  builder's features (pinned in the README or inferred as today), so streaming
  takes the Arrow path the Parquet builder takes: one column-wise decode per
  batch instead of an encode and a decode per example.

:func:`patched` installs them for the duration of a ``with`` block. Nothing in
laion-hf's runtime uses this module.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from itertools import islice
from unittest import mock

import datasets
import pyarrow as pa
from datasets.builder import Key
from datasets.packaged_modules.webdataset import webdataset as webdataset_module
from datasets.utils.file_utils import ArchiveIterable

BLOCK = tarfile.BLOCKSIZE
_END = bytes(BLOCK)
_REGULAR = (b"0", b"\0", b"7")
_MEDIA = (datasets.Image, datasets.Audio, datasets.Video)


def _octal(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256
        return int.from_bytes(field[1:], "big")
    return int(field.strip(b" \0") or b"0", 8)


def _pax_path(data: bytes) -> str | None:
    path, pos = None, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        keyword, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        if keyword == b"path":
            path = value.decode("utf-8")
        pos += length
    return path


def iter_tar(f) -> Iterator[tuple[str, io.BytesIO]]:
    """``(name, file object)`` of every regular member of the tar stream ``f``, like ``ArchiveIterable._iter_tar``."""
    offset, long_name, pax_path = 0, None, None
    while True:
        header = f.read(BLOCK)
        if len(header) < BLOCK or header == _END:
            return
        checksum = 256 + sum(header) - sum(header[148:156])  # the checksum field counts as eight spaces
        if checksum != _octal(header[148:156]):
            raise tarfile.ReadError(f"bad tar header checksum at byte {offset}")
        size = _octal(header[124:136])
        data = f.read(size)
        if len(data) < size:
            raise tarfile.ReadError(f"member at byte {offset} cut short")
        f.read(-size % BLOCK)
        offset += BLOCK + size + (-size % BLOCK)
        kind = header[156:157]
        if kind == b"L":
            long_name = data.rstrip(b"\0").decode("utf-8")
            continue
        if kind == b"x":
            pax_path = _pax_path(data) or pax_path
            continue
        name = long_name or pax_path
        long_name = pax_path = None
        if kind not in _REGULAR:
            continue
        if name is None:
            name = header[:100].rstrip(b"\0").decode("utf-8")
            prefix = header[345:500].rstrip(b"\0") if header[257:262] == b"ustar" else b""
            if prefix:
                name = f"{prefix.decode('utf-8')}/{name}"
        if os.path.basename(name).startswith((".", "__")):
            continue
        yield name, io.BytesIO(data)


def _batches(items: Iterator[dict], size: int) -> Iterator[list[dict]]:
    while batch := list(islice(items, size)):
        yield batch


class ArrowWebDataset(datasets.ArrowBasedBuilder):
    """``datasets``' WebDataset builder, streaming Arrow tables of ``BATCH_SIZE`` samples instead of examples."""

    BATCH_SIZE = 100
    IMAGE_EXTENSIONS = webdataset_module.WebDataset.IMAGE_EXTENSIONS
    AUDIO_EXTENSIONS = webdataset_module.WebDataset.AUDIO_EXTENSIONS
    VIDEO_EXTENSIONS = webdataset_module.WebDataset.VIDEO_EXTENSIONS
    MESH_EXTENSIONS = webdataset_module.WebDataset.MESH_EXTENSIONS
    DECODERS = webdataset_module.WebDataset.DECODERS
    NUM_EXAMPLES_FOR_FEATURES_INFERENCE = webdataset_module.WebDataset.NUM_EXAMPLES_FOR_FEATURES_INFERENCE
    _get_pipeline_from_tar = webdataset_module.WebDataset.__dict__["_get_pipeline_from_tar"]
    _info = webdataset_module.WebDataset._info
    _split_generators = webdataset_module.WebDataset._split_generators
    _generate_shards = webdataset_module.WebDataset._generate_shards

    def _generate_tables(self, tar_paths, tar_iterators):
        features = self.info.features
        media = [name for name, feature in features.items() if isinstance(feature, (*_MEDIA, datasets.Mesh))]
        schema = features.arrow_schema
        for tar_index, (tar_path, tar_iterator) in enumerate(zip(tar_paths, tar_iterators)):
            examples = self._get_pipeline_from_tar(tar_path, tar_iterator)
            for batch_index, batch in enumerate(_batches(examples, self.BATCH_SIZE)):
                for example in batch:
                    for name in media:
                        if example.get(name) is not None:
                            example[name] = {"path": f"{example['__key__']}.{name}", "bytes": example[name]}
                # Missing fields become nulls, as the generator fills them with None.
                yield Key(tar_index, batch_index), pa.Table.from_pylist(batch, schema=schema)


@contextmanager
def patched(tar_walk: bool = True, arrow_builder: bool = True) -> Iterator[None]:
    """Install the lean tar walk and/or the Arrow builder in this process until the block ends."""
    with ExitStack() as stack:
        if tar_walk:
            stack.enter_context(mock.patch.object(ArchiveIterable, "_iter_tar", staticmethod(iter_tar)))
        if arrow_builder:
            # load_dataset takes the builder class from the packaged module's namespace
            stack.enter_context(mock.patch.object(webdataset_module, "WebDataset", ArrowWebDataset))
        yield
