"""The build recipes as ``datasets`` BuilderConfigs: one config per (recipe, published config).

For users who build from their own data rather than download a published
repo: ``LaionRecipe`` reads a finished ``laion-hf build`` output
(``data_dir=OUTPUT``), or runs the recipe itself on WAT files given as
``data_files`` (the build lands in the builder's cache directory and resumes
like any build). Either way the rows are the config's shards, images as
their original bytes::

    from builders.recipes import LaionRecipe

    builder = LaionRecipe(config_name="relaion5b-research-safe", data_dir="my-build")
    builder.download_and_prepare()
    dataset = builder.as_dataset("train")
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import pyarrow as pa

from laion_hf.build import CONFIGS, REPORT_FILE, STEPS_DIR, Build, BuildOptions, image_shards
from laion_hf.core.errors import UserError
from laion_hf.io.samples import IMAGE, IMAGE_EXT, read_sample_batches
from laion_hf.recipes import builtin_recipes, load_recipe

#: Columns a build may produce, with their types (absent ones are None in a row).
COLUMNS = {
    "key": datasets.Value("string"),
    "url": datasets.Value("string"),
    "caption": datasets.Value("string"),
    "language": datasets.Value("string"),
    "license": datasets.Value("string"),
    "page_url": datasets.Value("string"),
    "hash": datasets.Value("int64"),
    "width": datasets.Value("int64"),
    "height": datasets.Value("int64"),
    "similarity": datasets.Value("float64"),
    "punsafe": datasets.Value("float64"),
    "pwatermark": datasets.Value("float64"),
    "aesthetic": datasets.Value("float64"),
    "NSFW": datasets.Value("string"),
}


class RecipeBuilderConfig(datasets.BuilderConfig):
    """One published config of one recipe (``relaion5b-research``, ``laion5b-2B-en``...)."""

    def __init__(self, *, recipe: str, config: str, **kwargs) -> None:
        super().__init__(name=f"{recipe}-{config}", **kwargs)
        self.recipe = recipe
        self.config = config


def recipe_configs() -> list[RecipeBuilderConfig]:
    """A BuilderConfig for every config of every shipped recipe whose files are present."""
    configs = []
    for name in builtin_recipes():
        try:
            recipe = load_recipe(name)
        except UserError:  # e.g. the demo recipe before the tiny model is trained
            continue
        for config in recipe.configs:
            configs.append(
                RecipeBuilderConfig(
                    recipe=name,
                    config=config.name,
                    version=datasets.Version(recipe.version),
                    description=f"{recipe.name} {recipe.version}, config {config.name}: {config.description}",
                )
            )
    return configs


def config_dir(build_output: str, config: str) -> str:
    """Where a build wrote a config's shards."""
    return os.path.join(build_output, STEPS_DIR, CONFIGS, config)


class LaionRecipe(datasets.GeneratorBasedBuilder):
    """Samples of a recipe's config, from a finished build (``data_dir``) or by building WAT files (``data_files``)."""

    BUILDER_CONFIG_CLASS = RecipeBuilderConfig
    BUILDER_CONFIGS = recipe_configs()

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=self.config.description,
            features=datasets.Features({**COLUMNS, "image": datasets.Image()}),
        )

    def _build_output(self) -> str:
        if self.config.data_dir:
            output = str(self.config.data_dir)
            if not Path(output, REPORT_FILE).is_file():
                raise UserError(f"{output}: not a finished laion-hf build (no {REPORT_FILE}); run laion-hf build first")
            return output
        if not self.config.data_files:
            raise UserError(f"{self.config.name}: pass data_dir=<a laion-hf build output> or data_files=<WAT files>")
        inputs = [str(f) for files in self.config.data_files.values() for f in files]
        output = os.path.join(self._cache_dir_root, "laion-hf-build", self.config.recipe)
        Build(load_recipe(self.config.recipe), BuildOptions(inputs=inputs, output=output, show_progress=False)).run()
        return output

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        directory = config_dir(self._build_output(), self.config.config)
        shards = [shard.__dict__ for shard in image_shards(directory)]
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"shards": shards})]

    def _generate_examples(self, shards: list[dict]):
        from laion_hf.io.shards import Shard

        for spec in shards:
            for batch in read_sample_batches(Shard(**spec)):
                yield from _rows(batch)


def _rows(batch: pa.Table):
    present = {name: batch[name].to_pylist() for name in COLUMNS if name in batch.column_names}
    images = batch[IMAGE].to_pylist()
    extensions = batch[IMAGE_EXT].to_pylist()
    for i in range(batch.num_rows):
        row = {name: (present[name][i] if name in present else None) for name in COLUMNS}
        row["image"] = {"bytes": images[i], "path": f"{row['key']}.{extensions[i]}"}
        yield row["key"], row
