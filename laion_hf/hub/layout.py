"""Turn laion-hf outputs into a Hub-ready folder: one config per variant, shards named the Hub way.

Input: for each config (``research``, ``research-safe``, ``2B-en`` ...) a
directory of shards, in img2dataset layout (``00000.tar`` + ``00000.parquet``)
or LAION metadata parquet. Output::

    FOLDER/{config}/{split}-{i:05d}-of-{n:05d}.tar       (format="webdataset")
    FOLDER/{config}/{split}-{i:05d}-of-{n:05d}.parquet   (format="parquet")

Consecutive input shards are packed into output shards of about
``target_shard_bytes`` so a 2B-row copy stays under the Hub's limits (files per
folder, file size); tar members are copied byte-for-byte. One folder holds one
format because ``datasets`` picks one packaged builder per repo (inferred from
the first config's files): publish WebDataset and Parquet as two repos.
The YAML that declares the configs (with one ``default: true``) and, for
WebDataset, pinned ``dataset_info.features`` comes from :meth:`HubLayout.card_data`.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.core.errors import UserError, reading
from laion_hf.io.atomic import atomic_path, filesystem, read_json, write_json
from laion_hf.io.samples import ShardIndex
from laion_hf.io.shards import Shard, discover_shards
from laion_hf.io.tar import iter_members, iter_samples, member_extension

Format = Literal["webdataset", "parquet"]

#: Hub limits (https://huggingface.co/docs/hub/storage-limits).
MAX_FILES_PER_FOLDER = 10_000
MAX_FILES_PER_REPO = 100_000
MAX_FILE_BYTES = 20 * 1000**3
#: Files well below the hard limit stream and resume better; the Hub recommends < 5 GB.
DEFAULT_TARGET_SHARD_BYTES = 1000**3
#: Hidden folder (never pushed) recording which inputs made each output shard.
PROVENANCE_DIR = ".layout"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tiff")


class LayoutError(UserError, ValueError):
    """The input cannot be laid out for the Hub (missing shards, limits exceeded)."""


@dataclass
class ConfigLayout:
    """One config of the folder: its files and what they hold."""

    name: str
    split: str
    files: list[str]
    num_rows: int
    num_bytes: int
    features: dict | None = None

    @property
    def pattern(self) -> str:
        return f"{self.name}/{self.split}-*"


@dataclass
class HubLayout:
    """What :func:`write_hub_folder` wrote; renders the YAML ``configs`` / ``dataset_info``."""

    folder: str
    format: Format
    configs: list[ConfigLayout] = field(default_factory=list)
    default: str | None = None

    def card_data(self) -> dict:
        """YAML metadata for the README: ``configs`` (one default) and ``dataset_info`` per config."""
        import datasets

        extension = "tar" if self.format == "webdataset" else "parquet"
        configs, infos = [], []
        for config in self.configs:
            entry = {
                "config_name": config.name,
                "data_files": [{"split": config.split, "path": f"{config.pattern}.{extension}"}],
            }
            if config.name == self.default:
                entry["default"] = True
            configs.append(entry)
            info = {
                "config_name": config.name,
                "splits": [{"name": config.split, "num_bytes": config.num_bytes, "num_examples": config.num_rows}],
                "download_size": config.num_bytes,
                "dataset_size": config.num_bytes,
            }
            if config.features is not None:
                features = datasets.Features.from_dict(config.features)
                info["features"] = datasets.DatasetInfo(features=features)._to_yaml_dict()["features"]
            infos.append(info)
        return {"configs": configs, "dataset_info": infos}


def write_hub_folder(
    sources: Mapping[str, str],
    folder: str,
    *,
    format: Format = "webdataset",
    split: str = "train",
    default: str | None = None,
    target_shard_bytes: int = DEFAULT_TARGET_SHARD_BYTES,
    include_images: bool = False,
) -> HubLayout:
    """Lay out ``{config: shard_dir}`` in ``folder`` for the Hub and describe it.

    ``format="webdataset"`` needs tars (img2dataset layout); ``"parquet"``
    writes the metadata rows (successful samples only when a ``status``
    column exists), with the image bytes as an ``image`` column when
    ``include_images``. Output files are written atomically; a shard already
    made from the same inputs is kept, so an interrupted run resumes, and
    shards of an earlier layout with another shard count are removed.
    """
    if not sources:
        raise LayoutError("no configs to publish: give at least one config=shard_dir")
    default = default or next(iter(sources))
    if default not in sources:
        raise LayoutError(f"default config {default!r} is not one of {', '.join(sources)}")
    layout = HubLayout(folder=folder, format=format, default=default)
    for name, directory in sources.items():
        _check_config_name(name)
        try:
            shards = discover_shards(directory)
        except FileNotFoundError as exc:
            raise LayoutError(f"config {name!r}: {exc}") from exc
        if format == "webdataset":
            layout.configs.append(_write_webdataset_config(name, split, shards, folder, target_shard_bytes))
        elif format == "parquet":
            layout.configs.append(_write_parquet_config(name, split, shards, folder, target_shard_bytes, include_images))
        else:
            raise LayoutError(f"unknown format {format!r} (webdataset or parquet)")
    total_files = sum(len(c.files) for c in layout.configs)
    if total_files >= MAX_FILES_PER_REPO:
        raise LayoutError(f"{folder}: {total_files} files exceed the Hub limit of {MAX_FILES_PER_REPO} per repo; raise target_shard_bytes")
    return layout


def _check_config_name(name: str) -> None:
    if not name or "/" in name or name.startswith(".") or any(c.isspace() for c in name):
        raise LayoutError(f"invalid config name {name!r}: use letters, digits, '-' and '_'")


def pack(sizes: list[int], target: int) -> list[list[int]]:
    """Group consecutive input indices into output shards of about ``target`` bytes (never splitting an input)."""
    groups: list[list[int]] = []
    current, current_size = [], 0
    for index, size in enumerate(sizes):
        if current and current_size + size > target:
            groups.append(current)
            current, current_size = [], 0
        current.append(index)
        current_size += size
    if current:
        groups.append(current)
    return groups


def shard_names(config: str, split: str, count: int, extension: str) -> list[str]:
    """``{config}/{split}-{i:05d}-of-{n:05d}.{ext}``; refuses counts over the Hub's per-folder limit."""
    if count >= MAX_FILES_PER_FOLDER:
        raise LayoutError(
            f"config {config!r}: {count} shards exceed the Hub limit of {MAX_FILES_PER_FOLDER} files per folder; "
            "raise target_shard_bytes"
        )
    return [f"{config}/{split}-{i:05d}-of-{count:05d}.{extension}" for i in range(count)]


def _size(path: str) -> int:
    fs, inner = filesystem(path)
    return fs.size(inner)


def _local(folder: str, relative: str) -> str:
    return f"{folder.rstrip('/')}/{relative}"


def _produce(folder: str, relative: str, inputs: list[str], options: dict, write) -> str:
    """Write one output shard unless it exists and was made from the same inputs (resumption).

    The inputs' paths and sizes are recorded in ``FOLDER/.layout/<shard>.json``
    (hidden files are never pushed), so changed inputs are rewritten, not reused.
    """
    out = _local(folder, relative)
    provenance = {"inputs": [[path, _size(path)] for path in inputs], "options": options}
    record = _local(folder, f"{PROVENANCE_DIR}/{relative}.json")
    fs, inner = filesystem(out)
    if not (fs.exists(inner) and fs.exists(filesystem(record)[1]) and read_json(record) == provenance):
        write(out)
        write_json(record, provenance)
    return out


def _remove_stale(folder: str, config: str, split: str, names: list[str]) -> None:
    """Delete shards of an earlier layout of this config (another shard count), which ``{split}-*`` would match."""
    fs, inner = filesystem(_local(folder, config))
    if not fs.isdir(inner):
        return
    keep = {name.rsplit("/", 1)[-1] for name in names}
    for path in fs.ls(inner, detail=False):
        base = path.rsplit("/", 1)[-1]
        if base.startswith(f"{split}-") and base not in keep:
            fs.rm(path)


def _write_webdataset_config(name: str, split: str, shards: list[Shard], folder: str, target: int) -> ConfigLayout:
    missing = [s.parquet for s in shards if s.tar is None]
    if missing:
        raise LayoutError(f"config {name!r}: WebDataset needs a tar beside every parquet; none for {missing[0]}")
    rows = sum(_sample_count(shard) for shard in shards)
    groups = pack([_size(s.tar) for s in shards], target)
    names = shard_names(name, split, len(groups), "tar")
    _remove_stale(folder, name, split, names)
    for group, relative in zip(groups, names):
        tars = [shards[i].tar for i in group]
        _produce(folder, relative, tars, {}, lambda dst, tars=tars: _concat_tars(tars, dst))
    for relative in names:
        if _size(_local(folder, relative)) > MAX_FILE_BYTES:
            raise LayoutError(f"{relative}: larger than the Hub's {MAX_FILE_BYTES} byte file limit")
    features = _webdataset_features(shards[0])
    return ConfigLayout(name, split, names, rows, sum(_size(_local(folder, n)) for n in names), features)


def _concat_tars(sources: Iterable[str], dst: str) -> None:
    """One tar holding every member of ``sources`` in order, headers and bytes unchanged."""
    with atomic_path(dst) as tmp, fsspec.open(tmp, "wb") as out, tarfile.open(
        fileobj=out, mode="w", format=tarfile.GNU_FORMAT
    ) as tar:
        for source in sources:
            for info, data in iter_members(source):
                tar.addfile(info, io.BytesIO(data))


def _sample_count(shard: Shard) -> int:
    """The sidecar's sample rows, once the tar is known to hold each one's image (tars are published as they are)."""
    index = ShardIndex.read(shard)
    missing = index.missing_images()
    if missing:
        raise LayoutError(
            f"{shard.tar}: no image for key {missing[0]} ({len(missing)} missing), which {shard.parquet} records "
            "as a success; re-run the step that wrote this shard"
        )
    return len(index.rows)


def _webdataset_features(shard: Shard) -> dict:
    """Features the ``datasets`` WebDataset builder should use, pinned rather than guessed from 5 samples.

    Column per member extension: images -> Image, ``txt`` -> string, ``json``
    -> a struct typed from the shard's parquet (img2dataset writes the same
    fields to both) and, where the parquet lacks a field, from the JSON values.
    """
    import datasets

    extensions: list[str] = []
    json_rows: list[dict] = []
    for _, sample in iter_samples(shard.tar):
        for extension in sample:
            if extension not in extensions:
                extensions.append(extension)
        if "json" in sample:
            json_rows.append(json.loads(sample["json"]))
    features: dict = {}
    parquet_types = {f.name: f.type for f in pq.read_schema(shard.parquet)} if shard.parquet else {}
    for extension in extensions:
        last = extension.rsplit(".", 1)[-1].lower()
        if last in IMAGE_EXTENSIONS:
            features[extension] = datasets.Image()
        elif last == "json":
            features[extension] = _json_features(json_rows, parquet_types)
        elif last in ("txt", "text", "cls", "caption"):
            features[extension] = datasets.Value("string") if last != "cls" else datasets.Value("int64")
        else:
            features[extension] = datasets.Value("binary")
    features["__key__"] = datasets.Value("string")
    features["__url__"] = datasets.Value("string")
    return datasets.Features(features).to_dict()


def _json_features(rows: list[dict], parquet_types: Mapping[str, pa.DataType]):
    import datasets

    inferred = pa.Table.from_pylist(rows).schema if rows else pa.schema([])
    fields = []
    for f in inferred:
        arrow_type = f.type
        if pa.types.is_null(arrow_type):
            arrow_type = parquet_types.get(f.name, pa.string())
        fields.append(pa.field(f.name, arrow_type))
    return datasets.Features.from_arrow_schema(pa.schema(fields))


def _write_parquet_config(
    name: str, split: str, shards: list[Shard], folder: str, target: int, include_images: bool
) -> ConfigLayout:
    if include_images:
        missing = [s.parquet for s in shards if s.tar is None]
        if missing:
            raise LayoutError(f"config {name!r}: include_images needs a tar beside every parquet; none for {missing[0]}")
    sizes = [_size(s.parquet) + (_size(s.tar) if include_images else 0) for s in shards]
    groups = pack(sizes, target)
    names = shard_names(name, split, len(groups), "parquet")
    _remove_stale(folder, name, split, names)
    rows = 0
    for group, relative in zip(groups, names):
        members = [shards[i] for i in group]
        inputs = [s.parquet for s in members] + ([s.tar for s in members] if include_images else [])
        out = _produce(
            folder, relative, inputs, {"include_images": include_images},
            lambda dst, members=members: _write_parquet_shard(members, dst, include_images),
        )
        rows += pq.ParquetFile(out).metadata.num_rows
    features = None
    if include_images:
        import datasets

        schema = pq.read_schema(_local(folder, names[0]))
        decoded = datasets.Features.from_arrow_schema(schema.remove(schema.get_field_index("image")))
        decoded["image"] = datasets.Image()
        features = decoded.to_dict()
    return ConfigLayout(name, split, names, rows, sum(_size(_local(folder, n)) for n in names), features)


def _write_parquet_shard(shards: list[Shard], dst: str, include_images: bool) -> None:
    """Concatenate the shards' rows (successful ones when there is a status) into one parquet, batch by batch."""
    writer: pq.ParquetWriter | None = None
    with atomic_path(dst) as tmp:
        try:
            for shard in shards:
                images = _images_by_key(shard.tar) if include_images else None
                with reading(shard.parquet, "parquet shard"):
                    for batch in pq.ParquetFile(shard.parquet).iter_batches(batch_size=8192):
                        table = _successful(pa.Table.from_batches([batch]))
                        if images is not None:
                            table = _attach_images(table, images, shard)
                        if writer is None:
                            writer = pq.ParquetWriter(tmp, table.schema)
                        writer.write_table(table.cast(writer.schema))
            if writer is None:
                raise LayoutError(f"{shards[0].parquet}: no rows")
        finally:
            if writer is not None:
                writer.close()


def _successful(table: pa.Table) -> pa.Table:
    if "status" not in table.column_names:
        return table
    import pyarrow.compute as pc

    return table.filter(pc.equal(table["status"], "success"))


def _images_by_key(tar: str) -> dict[str, tuple[str, bytes]]:
    """The image member of each sample in one input tar (memory: one input shard's images)."""
    images = {}
    for info, data in iter_members(tar):
        extension = member_extension(info.name)
        if extension.lower() in IMAGE_EXTENSIONS:
            images[info.name.rsplit("/", 1)[-1].split(".", 1)[0]] = (info.name.rsplit("/", 1)[-1], data)
    return images


def _attach_images(table: pa.Table, images: Mapping[str, tuple[str, bytes]], shard: Shard) -> pa.Table:
    keys = table["key"].to_pylist() if "key" in table.column_names else None
    if keys is None:
        raise LayoutError(f"{shard.parquet}: include_images needs a 'key' column to match the tar")
    missing = [k for k in keys if k not in images]
    if missing:
        raise LayoutError(f"{shard.tar}: no image for key {missing[0]} listed as successful in {os.path.basename(shard.parquet)}")
    image_type = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
    column = pa.array([{"bytes": images[k][1], "path": images[k][0]} for k in keys], type=image_type)
    return table.append_column("image", column)
