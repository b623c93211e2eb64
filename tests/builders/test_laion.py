"""The builders produce, from a local copy, the rows the published repo holds."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from builders import Laion5B, ReLaion5B
from laion_hf.demo import generate_sample_copy
from laion_hf.io.tar import iter_samples


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    return generate_sample_copy(tmp_path_factory.mktemp("copy"), rows_per_shard=30, download_shards=2)


def test_images_config_prepared_and_streamed_equal_the_tars(copy, tmp_path):
    expected = [(key, members["jpg"]) for tar in sorted(copy.download_dir.glob("*.tar")) for key, members in iter_samples(str(tar))]
    builder = ReLaion5B(config_name="research-images", data_dir=str(copy.download_dir), cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    prepared = builder.as_dataset(split="train").cast_column("image", __import__("datasets").Image(decode=False))
    assert [(r["key"], r["image"]["bytes"]) for r in prepared] == expected
    streamed = ReLaion5B(config_name="research-images", data_dir=str(copy.download_dir)).as_streaming_dataset(split="train")
    assert [r["key"] for r in streamed] == [key for key, _ in expected]


def test_laion5b_metadata_config_has_canonical_columns_and_swaps_width_height(copy, tmp_path):
    source = pq.read_table(sorted(copy.metadata_dir.glob("*.parquet"))[0])
    builder = Laion5B(config_name="2B-en", data_dir=str(copy.metadata_dir), cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    dataset = builder.as_dataset(split="train")
    assert {"url", "caption", "width", "height", "punsafe", "hash"} <= set(dataset.column_names)
    assert dataset[0]["url"] == source["URL"][0].as_py()
    assert dataset[0]["width"] == source["HEIGHT"][0].as_py() and dataset[0]["height"] == source["WIDTH"][0].as_py()
    streamed = next(iter(Laion5B(config_name="2B-en", data_dir=str(copy.metadata_dir)).as_streaming_dataset(split="train")))
    assert streamed == dataset[0]


def test_missing_data_dir_and_missing_columns_are_clear(tmp_path):
    with pytest.raises(ValueError, match="needs data_dir"):
        ReLaion5B(config_name="research", cache_dir=str(tmp_path / "c")).download_and_prepare()
    (tmp_path / "meta").mkdir()
    pq.write_table(pa.table({"foo": [1]}), tmp_path / "meta" / "part-00000-x-c000.snappy.parquet")
    with pytest.raises(Exception, match="missing required column"):
        ReLaion5B(config_name="research", data_dir=str(tmp_path / "meta"), cache_dir=str(tmp_path / "c2")).download_and_prepare()
