"""``datasets`` builders for users who build from their own LAION copies (no Hub involved).

Loading scripts are gone from ``datasets`` (4.0), but builder classes imported
from Python still work: ``download_and_prepare()`` + ``as_dataset()`` write
and read Arrow, ``as_streaming_dataset()`` streams. One builder class per
family, one BuilderConfig per subset/variant; ``data_dir`` points at the
user's shards (local or fsspec):

    from builders import ReLaion5B
    builder = ReLaion5B(config_name="research-safe", data_dir="/data/relaion/research-safe")
    stream = builder.as_streaming_dataset(split="train")

Metadata configs read LAION parquet and name columns canonically (``url``,
``caption``, ``width`` ... whatever the release calls them); ``-images``
configs read an img2dataset download (tar + parquet) into the same columns a
published WebDataset repo carries, with the image bytes untouched.
"""

from __future__ import annotations

import json

import datasets
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.hub.load import canonical_names, iter_metadata
from laion_hf.io.shards import discover_shards
from laion_hf.io.tar import iter_samples
from laion_hf.schema import LAION_400M, LAION_5B_BASE, LAION_5B_MULTI, RELAION, require_columns

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
IMAGE_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("url", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("width", pa.int64()),
        pa.field("height", pa.int64()),
        pa.field("image", _IMAGE_TYPE),
    ]
)


class LaionConfig(datasets.BuilderConfig):
    """A subset/variant: what its shards hold (``metadata`` parquet or ``images``) and how to read them.

    ``schema`` documents the release's columns; the features come from the
    user's shards (canonically named), since copies differ (joined, aesthetic...).
    """

    def __init__(self, *, kind: str = "metadata", schema: pa.Schema | None = None, swap_width_height: bool = False, **kwargs):
        super().__init__(**kwargs)
        if kind not in ("metadata", "images"):
            raise ValueError(f"config {self.name}: kind must be metadata or images, not {kind!r}")
        self.kind = kind
        self.schema = schema
        self.swap_width_height = swap_width_height


def _canonical_schema(schema: pa.Schema, swap_width_height: bool) -> pa.Schema:
    renames = canonical_names(schema.names)
    if swap_width_height:
        swap = {"width": "height", "height": "width"}
        renames = {actual: swap.get(name, name) for actual, name in renames.items()}
    return pa.schema([pa.field(renames[f.name], f.type) for f in schema])


class LaionBuilder(datasets.ArrowBasedBuilder):
    """Shared reading logic; subclasses only declare their BuilderConfigs."""

    BUILDER_CONFIG_CLASS = LaionConfig
    BATCH_ROWS = 1000

    def _info(self) -> datasets.DatasetInfo:
        if self.config.kind == "images":
            features = datasets.Features.from_arrow_schema(IMAGE_SCHEMA.remove(IMAGE_SCHEMA.get_field_index("image")))
            features["image"] = datasets.Image()
        else:
            features = None  # taken from the user's shards in _split_generators: releases differ in columns
        return datasets.DatasetInfo(description=self.__doc__, features=features)

    def _split_generators(self, dl_manager):
        if not self.config.data_dir:
            raise ValueError(f"{type(self).__name__}({self.config.name!r}) needs data_dir= pointing at your shards")
        shards = discover_shards(self.config.data_dir)
        if self.config.kind == "images":
            missing = [s.parquet for s in shards if s.tar is None]
            if missing:
                raise ValueError(f"{missing[0]}: an images config needs img2dataset shards (a .tar beside each parquet)")
        else:
            with fsspec.open(shards[0].parquet, "rb") as f:
                schema = pq.read_schema(f)
            require_columns(schema.names, ["url", "caption"], shards[0].parquet)
            self.info.features = datasets.Features.from_arrow_schema(_canonical_schema(schema, self.config.swap_width_height))
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"shards": shards})]

    def _generate_tables(self, shards):
        for shard in shards:
            if self.config.kind == "images":
                yield from self._image_tables(shard)
                continue
            for index, batch in enumerate(iter_metadata([shard.parquet], swap_width_height=self.config.swap_width_height, batch_size=self.BATCH_ROWS)):
                table = pa.Table.from_batches([batch]).cast(self.info.features.arrow_schema)
                yield f"{shard.name}_{index}", table

    def _image_tables(self, shard):
        rows: list[dict] = []
        index = 0
        for key, members in iter_samples(shard.tar):
            meta = json.loads(members["json"]) if "json" in members else {}
            extension = next((e for e in members if e.lower() in IMAGE_EXTENSIONS), None)
            rows.append(
                {
                    "key": key,
                    "url": meta.get("url"),
                    "caption": members["txt"].decode("utf-8") if "txt" in members else meta.get("caption"),
                    "width": meta.get("width"),
                    "height": meta.get("height"),
                    "image": {"bytes": members[extension], "path": f"{key}.{extension}"} if extension else None,
                }
            )
            if len(rows) == self.BATCH_ROWS:
                yield f"{shard.name}_{index}", pa.Table.from_pylist(rows, schema=IMAGE_SCHEMA)
                rows, index = [], index + 1
        if rows:
            yield f"{shard.name}_{index}", pa.Table.from_pylist(rows, schema=IMAGE_SCHEMA)


class Laion400M(LaionBuilder):
    """LAION-400M: CLIP ViT-B/32 similarity >= 0.3, NSFW tags; metadata and img2dataset images."""

    BUILDER_CONFIGS = [
        LaionConfig(name="metadata", schema=LAION_400M, description="LAION-400M metadata parquet"),
        LaionConfig(name="images", kind="images", description="An img2dataset download of LAION-400M"),
    ]
    DEFAULT_CONFIG_NAME = "metadata"


class Laion5B(LaionBuilder):
    """LAION-5B subsets; the original metadata swaps WIDTH and HEIGHT, so the metadata configs swap them back."""

    BUILDER_CONFIGS = [
        LaionConfig(name="2B-en", schema=LAION_5B_BASE, swap_width_height=True, description="laion2B-en"),
        LaionConfig(name="2B-multi", schema=LAION_5B_MULTI, swap_width_height=True, description="laion2B-multi"),
        LaionConfig(name="1B-nolang", schema=LAION_5B_BASE, swap_width_height=True, description="laion1B-nolang"),
        LaionConfig(name="images", kind="images", description="An img2dataset download of a LAION-5B subset"),
    ]
    DEFAULT_CONFIG_NAME = "2B-en"


class ReLaion5B(LaionBuilder):
    """Re-LAION-5B (August 2024) research and research-safe variants, metadata and images."""

    BUILDER_CONFIGS = [
        LaionConfig(name="research", schema=RELAION, description="Re-LAION-5B research metadata"),
        LaionConfig(name="research-safe", schema=RELAION, description="Re-LAION-5B research-safe metadata"),
        LaionConfig(name="research-images", kind="images", description="research variant, img2dataset images"),
        LaionConfig(name="research-safe-images", kind="images", description="research-safe variant, img2dataset images"),
    ]
    DEFAULT_CONFIG_NAME = "research-safe"
