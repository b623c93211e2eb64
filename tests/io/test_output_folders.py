"""Every command's output folder reads as its data: ``load_dataset(OUT)``, DuckDB and ``webdataset``.

Beside the shards lie img2dataset's ``_stats.json``, reports, removed-row audits
and scratch folders; before the fix ``load_dataset(OUT)`` picked the JSON builder
for a ``clean`` or ``download`` output and failed with a CastError. The download
here is of real LAION captions with real photos in every format a LAION shard
holds (JPEG, PNG with alpha, CMYK JPEG, WebP, EXIF-rotated).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import datasets
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from laion_hf.build import Build, BuildOptions
from laion_hf.clean import CleanOptions, clean_copy
from laion_hf.demo.photos import real_photos
from laion_hf.io.shards import discover_shards
from laion_hf.recipes import load_recipe
from laion_hf.steps.dedup import dedup_shards
from laion_hf.steps.download import download
from laion_hf.testing.image_server import ImageServer
from tests.build_inputs import make_image_shards

SAMPLES = 15  # three of each format


def shard_rows(directory: Path) -> list[dict]:
    return [row for shard in discover_shards(str(directory)) for row in pq.read_table(shard.parquet).to_pylist()]


def declared_files(directory: Path) -> list[str]:
    """The train split's data files as the folder's README declares them (a glob or a list)."""
    front = (directory / "README.md").read_text().split("---\n")[1]
    [config] = yaml.safe_load(front)["configs"]
    [split] = config["data_files"]
    paths = split["path"] if isinstance(split["path"], list) else [split["path"]]
    return [str(directory / p) for p in paths]


def assert_reads_as_its_data(directory: Path, with_tars: bool = True) -> None:
    expected = shard_rows(directory)
    assert expected, f"{directory} has no rows to compare"
    with tempfile.TemporaryDirectory() as cache:
        loaded = datasets.load_dataset(str(directory), split="train", cache_dir=cache)
    assert loaded.to_list() == expected

    count = duckdb.sql(f"select count(*) from read_parquet({declared_files(directory)!r})").fetchall()[0][0]
    assert count == len(expected)

    if with_tars:
        import webdataset as wds

        tars = [shard.tar for shard in discover_shards(str(directory))]
        samples = list(wds.WebDataset(tars, shardshuffle=False))
        successes = [r["key"] for r in expected if r.get("status", "success") == "success"]
        assert sorted(s["__key__"] for s in samples) == sorted(successes)
        assert all({"jpg", "png", "webp"} & set(s) for s in samples)


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory, laion_pairs):
    """A real download (loopback server) of 15 real LAION captions with photos in the five formats."""
    tmp = tmp_path_factory.mktemp("folders")
    pairs = laion_pairs.slice(0, SAMPLES).to_pylist()
    with ImageServer() as server:
        urls = [server.image(f"/{i}/{photo.name}.{photo.extension}", photo.data)
                for i, photo in enumerate(real_photos() * 3)]
        candidates = tmp / "candidates.parquet"
        pq.write_table(pa.table({"url": urls, "caption": [p["TEXT"] for p in pairs]}), candidates)
        download(str(candidates), str(tmp / "download"), allow_private_network=True, rows_per_shard=6, show_progress=False)
    return tmp


@pytest.mark.slow
def test_download_output_loads(downloaded):
    out = downloaded / "download"
    assert (out / "download_report.json").exists() and list(out.glob("*_stats.json"))
    rows = shard_rows(out)
    assert [r["status"] for r in rows] == ["success"] * SAMPLES
    assert_reads_as_its_data(out)


@pytest.mark.slow
def test_clean_output_loads(downloaded, tmp_path):
    removed = shard_rows(downloaded / "download")[0]["url"]
    url_list = tmp_path / "urls.txt"
    url_list.write_text(__import__("hashlib").md5(removed.encode()).hexdigest() + "\n")
    out = tmp_path / "clean"
    report = clean_copy(str(downloaded / "download"), str(out), CleanOptions(remove=(("url-md5", str(url_list)),)),
                        show_progress=False)
    assert report.total.kept == SAMPLES - 1 and (out / "clean_report.json").exists()
    assert_reads_as_its_data(out)


@pytest.mark.slow
def test_dedup_output_with_removed_audits_and_scratch_loads(downloaded, tmp_path):
    out = tmp_path / "dedup"
    report = dedup_shards(str(downloaded / "download"), str(out), show_progress=False)
    assert report.stats.removed > 0 and list(out.glob("*_removed.parquet"))  # the same photos repeat
    assert_reads_as_its_data(out)


def test_build_step_outputs_load(tmp_path):
    make_image_shards(tmp_path / "in", shards=2, per_shard=10)
    Build(load_recipe("relaion5b"), BuildOptions(inputs=[str(tmp_path / "in")], output=str(tmp_path / "out"),
                                                 start_at="configs", show_progress=False)).run()
    for config in ("research", "research-safe"):
        step = tmp_path / "out" / "steps" / "configs" / config
        assert list((step / ".laion-hf" / "done").glob("*.json"))
        assert_reads_as_its_data(step)


def test_a_folder_of_an_earlier_run_resumes_and_then_loads(tmp_path):
    """Markers beside the data (laion-hf before the hidden folder) are honoured and moved out of the way."""
    make_image_shards(tmp_path / "in", shards=2, per_shard=4)
    out = tmp_path / "out"
    first = clean_copy(str(tmp_path / "in"), str(out), CleanOptions(), show_progress=False)
    done = out / ".laion-hf" / "done"
    for marker in done.glob("*.json"):  # as an earlier version left them
        marker.rename(out / f"{marker.stem}.done.json")
    (out / ".laion-hf" / "clean_options.json").rename(out / "clean_options.json")
    (out / "00000.tar").write_bytes(b"")  # proves the shard is not redone
    resumed = clean_copy(str(tmp_path / "in"), str(out), CleanOptions(), show_progress=False)
    assert resumed.shards == first.shards
    assert (out / "00000.tar").read_bytes() == b""
    assert not list(out.glob("*.done.json")) and not (out / "clean_options.json").exists()
    assert sorted(p.name for p in done.iterdir()) == ["00000.json", "00001.json"]
    assert_reads_as_its_data(out, with_tars=False)


def test_an_earlier_run_with_other_options_is_still_refused(tmp_path):
    make_image_shards(tmp_path / "in", shards=1, per_shard=4)
    out = tmp_path / "out"
    clean_copy(str(tmp_path / "in"), str(out), CleanOptions(), show_progress=False)
    (out / ".laion-hf" / "clean_options.json").rename(out / "clean_options.json")
    from laion_hf.core.errors import UserError

    with pytest.raises(UserError, match="cleaned with different options"):
        clean_copy(str(tmp_path / "in"), str(out), CleanOptions(variant="research"), show_progress=False)


def test_report_json_files_do_not_decide_the_builder(tmp_path):
    """Many JSON files (reports, stats) beside few shards: the README still names the parquet."""
    make_image_shards(tmp_path / "in", shards=1, per_shard=3)
    out = tmp_path / "out"
    clean_copy(str(tmp_path / "in"), str(out), CleanOptions(), show_progress=False)
    for name in ("a_report.json", "b_report.json", "c_report.json"):
        (out / name).write_text(json.dumps({"rows": 1}))
    assert_reads_as_its_data(out, with_tars=False)


def test_extract_output_loads_without_its_per_file_scratch(tmp_path):
    from laion_hf.steps.extract import extract
    from laion_hf.testing.wat import Image, Page, write_wat

    inputs = [write_wat(str(tmp_path / "in" / f"{name}.warc.wat.gz"),
                        [Page(url=f"https://{name}.example/", images=[Image(f"https://cdn.example/{name}.jpg", f"picture of {name}")])])
              for name in ("a", "b")]
    extract(inputs, str(tmp_path / "out"), show_progress=False, detect_language=False)
    assert list((tmp_path / "out" / "_files").glob("*.parquet"))  # the per-file scratch `load_dataset` used to add
    assert_reads_as_its_data(tmp_path / "out", with_tars=False)
