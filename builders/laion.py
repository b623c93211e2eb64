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
configs read an img2dataset download (tar + parquet; ``.jpg``, ``.png`` and
``.webp`` samples alike) into the same columns a published WebDataset repo
carries, with the image bytes untouched. The Re-LAION configs are what their
names say: ``research`` keeps rows with punsafe <= 0.95, ``research-safe``
<= 0.45 (Re-LAION's cuts, applied with :class:`laion_hf.clean.RemovalStage`),
and refuse shards without a punsafe column.
"""

from __future__ import annotations

import datasets
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.core.schema import LAION_5B_BASE, LAION_5B_MULTI, LAION_400M, RELAION, canonical_names, require_columns
from laion_hf.core.stage import split_kept
from laion_hf.hub.load import iter_metadata
from laion_hf.io.samples import IMAGE, IMAGE_EXT, read_sample_batches
from laion_hf.io.shards import discover_shards
from laion_hf.stages.removal import VARIANT_THRESHOLDS, RemovalStage

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
    ``punsafe_threshold`` removes rows whose punsafe is strictly above it.
    """

    def __init__(
        self,
        *,
        kind: str = "metadata",
        schema: pa.Schema | None = None,
        swap_width_height: bool = False,
        punsafe_threshold: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kind not in ("metadata", "images"):
            raise ValueError(f"config {self.name}: kind must be metadata or images, not {kind!r}")
        self.kind = kind
        self.schema = schema
        self.swap_width_height = swap_width_height
        self.punsafe_threshold = punsafe_threshold


def _canonical_schema(schema: pa.Schema, swap_width_height: bool) -> pa.Schema:
    renames = canonical_names(schema.names, swap_width_height)
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
        for shard in shards:
            with fsspec.open(shard.parquet, "rb") as f:
                names = pq.read_schema(f).names
            needed = ["url", "caption", *(["punsafe"] if self.config.punsafe_threshold is not None else [])]
            require_columns(names, needed, shard.parquet)
            if self.config.kind == "metadata" and shard is shards[0]:
                with fsspec.open(shard.parquet, "rb") as f:
                    schema = _canonical_schema(pq.read_schema(f), self.config.swap_width_height)
                self.info.features = datasets.Features.from_arrow_schema(schema)
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"shards": shards})]

    def _kept(self, table: pa.Table) -> pa.Table:
        """The rows the config keeps (all of them unless it has a punsafe cut)."""
        if self.config.punsafe_threshold is None:
            return table
        kept, _ = split_kept(RemovalStage(punsafe_threshold=self.config.punsafe_threshold)(table))
        return kept

    def _generate_tables(self, shards):
        for shard in shards:
            if self.config.kind == "images":
                yield from self._image_tables(shard)
                continue
            for index, batch in enumerate(iter_metadata([shard.parquet], swap_width_height=self.config.swap_width_height, batch_size=self.BATCH_ROWS)):
                table = self._kept(pa.Table.from_batches([batch])).cast(self.info.features.arrow_schema)
                yield f"{shard.name}_{index}", table

    def _image_tables(self, shard):
        """Samples in tar order: sidecar row (canonical names) + the image bytes as stored, any format."""
        for index, batch in enumerate(read_sample_batches(shard, batch_size=self.BATCH_ROWS)):
            batch = self._kept(batch)
            renames = canonical_names(batch.column_names)
            columns = {renames[name]: batch[name] for name in batch.column_names}
            paths = [f"{key}.{ext}" for key, ext in zip(columns["key"].to_pylist(), batch[IMAGE_EXT].to_pylist())]
            images = pa.StructArray.from_arrays([batch[IMAGE].combine_chunks(), pa.array(paths, pa.string())], fields=list(_IMAGE_TYPE))
            table = pa.table(
                {field.name: (images if field.name == "image" else columns.get(field.name, pa.nulls(batch.num_rows)))
                 for field in IMAGE_SCHEMA}
            )
            yield f"{shard.name}_{index}", table.cast(IMAGE_SCHEMA)


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
        LaionConfig(name="research", schema=RELAION, punsafe_threshold=VARIANT_THRESHOLDS["research"],
                    description="Re-LAION-5B research metadata (punsafe <= 0.95)"),
        LaionConfig(name="research-safe", schema=RELAION, punsafe_threshold=VARIANT_THRESHOLDS["research-safe"],
                    description="Re-LAION-5B research-safe metadata (punsafe <= 0.45)"),
        LaionConfig(name="research-images", kind="images", punsafe_threshold=VARIANT_THRESHOLDS["research"],
                    description="research variant, img2dataset images (punsafe <= 0.95 from the sidecar)"),
        LaionConfig(name="research-safe-images", kind="images", punsafe_threshold=VARIANT_THRESHOLDS["research-safe"],
                    description="research-safe variant, img2dataset images (punsafe <= 0.45 from the sidecar)"),
    ]
    DEFAULT_CONFIG_NAME = "research-safe"
