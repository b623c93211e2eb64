"""``LaionRecipe`` reads a finished build's configs: real photos in every format, the config's own cut."""

from __future__ import annotations

import datasets
import numpy as np

from builders.recipes import LaionRecipe
from laion_hf.build import Build, BuildOptions
from laion_hf.recipes import load_recipe
from tests.formats import write_real_photo_shards


def test_a_build_of_real_photos_reads_back_in_every_format(laion_pairs, tmp_path):
    punsafe = [0.1, 0.5, 0.2, 0.3, 0.96, 0.4, 0.45, 0.0, 0.7, 0.2]
    rows = write_real_photo_shards(tmp_path / "in", laion_pairs, shards=2, per_shard=5, extra={"punsafe": punsafe})
    Build(load_recipe("relaion5b"), BuildOptions(inputs=[str(tmp_path / "in")], output=str(tmp_path / "out"),
                                                 start_at="configs", show_progress=False)).run()
    builder = LaionRecipe(config_name="relaion5b-research-safe", data_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    dataset = builder.as_dataset("train")
    kept = [r for r in rows if np.float32(r["punsafe"]) <= np.float32(0.45)]
    assert dataset["key"] == [r["key"] for r in kept]
    raw = dataset.cast_column("image", datasets.Image(decode=False))["image"]
    assert sorted({image["path"].rsplit(".", 1)[1] for image in raw}) == ["jpg", "png", "webp"]
    assert [image.size for image in dataset["image"]] == [(r["width"], r["height"]) for r in kept]
