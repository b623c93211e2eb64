"""The builders produce, from a local copy, the rows the published repo holds.

Fixtures are LAION's layouts as published (Spark parts with hidden ``.crc``
files and ``_SUCCESS``), filled with real LAION (URL, TEXT) pairs, and
img2dataset downloads whose images are real photos in every format.
"""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from builders import Laion5B, Laion400M, ReLaion5B
from laion_hf.core.schema import SchemaError
from laion_hf.demo import generate_sample_copy
from laion_hf.demo.photos import real_photos
from laion_hf.demo.sample_copy import release_table, write_spark_output
from laion_hf.io.tar import iter_samples
from tests.formats import image_bytes, write_real_photo_shards


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    return generate_sample_copy(tmp_path_factory.mktemp("copy"), rows_per_shard=30, download_shards=2)


def prepared(builder_class, config, data_dir, cache):
    builder = builder_class(config_name=config, data_dir=str(data_dir), cache_dir=str(cache))
    builder.download_and_prepare()
    return builder.as_dataset(split="train")


def test_images_config_prepared_and_streamed_equal_the_tars(copy, tmp_path):
    # Samples come in key order within a shard (a download stores them in completion order).
    expected = [
        (key, image_bytes(members))
        for tar in sorted(copy.download_dir.glob("*.tar"))
        for key, members in sorted(iter_samples(str(tar)))
    ]
    dataset = prepared(Laion5B, "images", copy.download_dir, tmp_path / "cache").cast_column("image", datasets.Image(decode=False))
    assert [(r["key"], r["image"]["bytes"]) for r in dataset] == expected
    assert {r["image"]["path"].rsplit(".", 1)[1] for r in dataset} == {"jpg", "png", "webp"}
    streamed = Laion5B(config_name="images", data_dir=str(copy.download_dir)).as_streaming_dataset(split="train")
    assert [r["key"] for r in streamed] == [key for key, _ in expected]


def test_laion5b_metadata_config_has_canonical_columns_and_swaps_width_height(copy, tmp_path):
    source = pq.read_table(sorted(copy.metadata_dir.glob("*.parquet"))[0])
    dataset = prepared(Laion5B, "2B-en", copy.metadata_dir, tmp_path / "cache")
    assert {"url", "caption", "width", "height", "punsafe", "hash"} <= set(dataset.column_names)
    assert dataset[0]["url"] == source["URL"][0].as_py()
    assert dataset[0]["width"] == source["HEIGHT"][0].as_py() and dataset[0]["height"] == source["WIDTH"][0].as_py()
    streamed = next(iter(Laion5B(config_name="2B-en", data_dir=str(copy.metadata_dir)).as_streaming_dataset(split="train")))
    assert streamed == dataset[0]


@pytest.mark.parametrize(
    ("builder_class", "config", "family"),
    [(Laion400M, "metadata", "laion400m"), (Laion5B, "2B-en", "laion5b-base"), (Laion5B, "2B-multi", "laion5b-multi")],
)
def test_published_metadata_layouts_of_real_pairs(builder_class, config, family, laion_pairs, tmp_path):
    table = release_table(laion_pairs.slice(0, 120), family)
    write_spark_output(tmp_path / "release", table, shards=3)
    dataset = prepared(builder_class, config, tmp_path / "release", tmp_path / "cache")
    assert dataset["url"] == table["URL"].to_pylist() and dataset["caption"] == table["TEXT"].to_pylist()
    assert sorted(dataset.column_names) == sorted(name.lower().replace("text", "caption") for name in table.column_names)


@pytest.mark.parametrize(("config", "threshold"), [("research", 0.95), ("research-safe", 0.45)])
def test_relaion_configs_apply_their_punsafe_cut(config, threshold, laion_pairs, tmp_path):
    table = release_table(laion_pairs.slice(0, 200), "relaion5b")
    write_spark_output(tmp_path / "relaion", table, shards=2)
    dataset = prepared(ReLaion5B, config, tmp_path / "relaion", tmp_path / "cache")
    scores = table["punsafe"].to_pylist()
    expected = [row for row, p in zip(table["url"].to_pylist(), scores) if p is None or np.float32(p) <= np.float32(threshold)]
    assert dataset["url"] == expected
    assert 0 < len(expected) < table.num_rows
    assert max(p for p in dataset["punsafe"] if p is not None) <= threshold
    assert None in dataset["punsafe"]  # a NULL score is no reason to remove a row


def test_download_with_laions_and_its_own_width_height_keeps_both(laion_pairs, tmp_path):
    """img2dataset saved with LAION's WIDTH/HEIGHT (save_additional_columns) beside its own width/height."""
    n = 10
    extra = {"WIDTH": list(range(1000, 1000 + n)), "HEIGHT": list(range(2000, 2000 + n)), "punsafe": [i / 10 for i in range(n)]}
    rows = write_real_photo_shards(tmp_path / "download", laion_pairs, shards=2, per_shard=5, extra=extra)
    dataset = prepared(ReLaion5B, "research-safe", tmp_path / "download", tmp_path / "cache")
    kept = [r for r in rows if np.float32(r["punsafe"]) <= np.float32(0.45)]
    assert [(r["width"], r["height"], r["laion_width"], r["laion_height"]) for r in dataset] == [
        (r["width"], r["height"], r["WIDTH"], r["HEIGHT"]) for r in kept
    ]
    swapped = prepared(Laion5B, "2B-en", tmp_path / "download", tmp_path / "cache2")
    assert swapped[0]["laion_width"] == rows[0]["HEIGHT"] and swapped[0]["width"] == rows[0]["width"]


def test_images_configs_of_real_photos_apply_the_cut_and_keep_every_format(laion_pairs, tmp_path):
    n = 10
    rows = write_real_photo_shards(tmp_path / "download", laion_pairs, shards=2, per_shard=5,
                                   extra={"punsafe": [0.1, 0.5, 0.2, 0.3, 0.96, 0.4, 0.45, 0.0, 0.7, 0.2][:n]})
    dataset = prepared(ReLaion5B, "research-safe-images", tmp_path / "download", tmp_path / "cache")
    kept = [r for r in rows if np.float32(r["punsafe"]) <= np.float32(0.45)]
    assert dataset["key"] == [r["key"] for r in kept] and dataset["caption"] == [r["caption"] for r in kept]
    photos = real_photos()
    for row, image in zip(kept, dataset.cast_column("image", datasets.Image(decode=False))["image"]):
        photo = photos[(int(row["key"][:5]) * 5 + int(row["key"][5:])) % len(photos)]
        assert image["bytes"] == photo.data and image["path"] == f"{row['key']}.{photo.extension}"
    decoded = [image.size for image in dataset["image"]]
    assert decoded == [(r["width"], r["height"]) for r in kept]  # EXIF-rotated ones upright


def test_a_relaion_config_refuses_shards_without_punsafe(copy, tmp_path):
    with pytest.raises(SchemaError, match=r"00000\.parquet: missing required column\(s\) punsafe"):
        prepared(ReLaion5B, "research-images", copy.download_dir, tmp_path / "cache")


def test_missing_data_dir_and_missing_columns_are_clear(tmp_path):
    with pytest.raises(ValueError, match="needs data_dir"):
        ReLaion5B(config_name="research", cache_dir=str(tmp_path / "c")).download_and_prepare()
    (tmp_path / "meta").mkdir()
    pq.write_table(pa.table({"foo": [1]}), tmp_path / "meta" / "part-00000-x-c000.snappy.parquet")
    with pytest.raises(SchemaError, match="missing required column"):
        ReLaion5B(config_name="research", data_dir=str(tmp_path / "meta"), cache_dir=str(tmp_path / "c2")).download_and_prepare()
