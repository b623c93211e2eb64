from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from laion_hf.core.errors import UserError
from laion_hf.hub.layout import LayoutError, pack, shard_names, write_hub_folder
from laion_hf.io.tar import CorruptTarError, iter_samples
from tests.damaged_shards import CUTS, cut_tar, drop_sample


def test_pack_groups_consecutive_inputs_up_to_target():
    assert pack([5, 5, 5, 20, 1], target=10) == [[0, 1], [2], [3], [4]]


def test_shard_names_follow_hub_convention_and_refuse_too_many():
    assert shard_names("research", "train", 2, "tar") == ["research/train-00000-of-00002.tar", "research/train-00001-of-00002.tar"]
    with pytest.raises(LayoutError, match="10000 files per folder"):
        shard_names("research", "train", 10_000, "tar")


def test_webdataset_layout_copies_samples_and_declares_configs(variants, tmp_path):
    sources = {name: str(path) for name, (path, _) in variants.items()}
    layout = write_hub_folder(sources, str(tmp_path / "hub"), default="research-safe", target_shard_bytes=30_000)
    research = layout.configs[0]
    assert research.num_rows == len(variants["research"][1])
    assert all(name.startswith("research/train-") and name.endswith(f"-of-{len(research.files):05d}.tar") for name in research.files)
    keys = [key for f in research.files for key, _ in iter_samples(str(tmp_path / "hub" / f))]
    assert keys == [row["key"] for row in variants["research"][1]]
    data = layout.card_data()
    assert [c["config_name"] for c in data["configs"]] == ["research", "research-safe"]
    assert [c.get("default", False) for c in data["configs"]] == [False, True]
    features = {f["name"]: f for f in data["dataset_info"][0]["features"]}
    assert features["jpg"]["dtype"] == "image" and features["txt"]["dtype"] == "string"
    assert {f["name"] for f in features["json"]["struct"]} >= {"url", "caption", "width", "error_message"}


def test_parquet_layout_keeps_successful_rows_and_can_embed_images(variants, tmp_path):
    sources = {name: str(path) for name, (path, _) in variants.items()}
    layout = write_hub_folder(sources, str(tmp_path / "hub"), format="parquet", include_images=True)
    table = pq.read_table(tmp_path / "hub" / layout.configs[0].files[0])
    assert table["url"].to_pylist() == [r["url"] for r in variants["research"][1]]
    assert set(table["status"].to_pylist()) == {"success"}
    assert table["image"][0]["bytes"].as_py()[:2] == b"\xff\xd8"


def test_rerun_keeps_existing_outputs(variants, tmp_path):
    sources = {"research": str(variants["research"][0])}
    first = write_hub_folder(sources, str(tmp_path / "hub"))
    path = tmp_path / "hub" / first.configs[0].files[0]
    before = path.stat().st_mtime_ns
    second = write_hub_folder(sources, str(tmp_path / "hub"))
    assert path.stat().st_mtime_ns == before and second.configs[0].num_rows == first.configs[0].num_rows


def test_webdataset_needs_tars(tmp_path):
    import pyarrow as pa

    (tmp_path / "meta").mkdir()
    pq.write_table(pa.table({"URL": ["u"], "TEXT": ["t"]}), tmp_path / "meta" / "part-00000-x-c000.snappy.parquet")
    with pytest.raises(LayoutError, match="needs a tar"):
        write_hub_folder({"meta": str(tmp_path / "meta")}, str(tmp_path / "hub"))


def test_changed_inputs_or_shard_count_never_leave_stale_shards(tmp_path, make_img2dataset_dir):
    source = tmp_path / "src"
    make_img2dataset_dir(source, shards=4, per_shard=3)
    first = write_hub_folder({"research": str(source)}, str(tmp_path / "hub"), target_shard_bytes=1)
    assert len(first.configs[0].files) == 4
    second = write_hub_folder({"research": str(source)}, str(tmp_path / "hub"), target_shard_bytes=10**9)
    assert sorted(p.name for p in (tmp_path / "hub" / "research").iterdir()) == ["train-00000-of-00001.tar"]
    assert second.configs[0].num_rows == 12
    make_img2dataset_dir(source, shards=5, per_shard=3)  # the output changed: one more shard
    third = write_hub_folder({"research": str(source)}, str(tmp_path / "hub"), target_shard_bytes=10**9)
    assert third.configs[0].num_rows == 15


def _published_files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("format", ["webdataset", "parquet"])
@pytest.mark.parametrize("how", CUTS)
def test_a_cut_input_tar_is_an_error_naming_it_and_nothing_is_published(tmp_path, make_img2dataset_dir, how, format):
    """Cut at a member boundary, tarfile alone would stop quietly and publish fewer samples than the sidecar lists."""
    source = tmp_path / "research"
    make_img2dataset_dir(source, shards=2, per_shard=4)
    cut_tar(source / "00001.tar", how)
    with pytest.raises(CorruptTarError, match="research/00001.tar"):
        write_hub_folder({"research": str(source)}, str(tmp_path / "hub"), format=format, include_images=format == "parquet")
    assert _published_files(tmp_path / "hub") == []


def test_a_success_row_without_its_sample_is_refused_with_tar_and_key(tmp_path, make_img2dataset_dir):
    source = tmp_path / "research"
    make_img2dataset_dir(source, shards=2, per_shard=4)
    drop_sample(source / "00001.tar", "000010002")
    with pytest.raises(LayoutError, match=r"research/00001.tar: no image for key 000010002 \(1 missing\), which .*00001.parquet records as a success"):
        write_hub_folder({"research": str(source)}, str(tmp_path / "hub"))
    assert _published_files(tmp_path / "hub") == []


def test_a_damaged_parquet_shard_is_an_error_naming_it(tmp_path, make_img2dataset_dir):
    source = tmp_path / "research"
    make_img2dataset_dir(source, shards=2, per_shard=4)
    (source / "00001.parquet").write_bytes(b"not a parquet file at all")
    for format in ("webdataset", "parquet"):
        with pytest.raises(UserError, match="research/00001.parquet: cannot read parquet shard"):
            write_hub_folder({"research": str(source)}, str(tmp_path / format), format=format)
