"""clean_copy end to end on the sample copy: exact kept sets, exact schema, byte-identical tars."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laion_hf.clean import CleanOptions, clean_copy
from laion_hf.clean.options import default_workers
from laion_hf.core.errors import UserError
from laion_hf.core.hashing import laion_hash
from laion_hf.io.tar import iter_samples
from tests.formats import image_bytes

THRESHOLDS = {"research": 0.95, "research-safe": 0.45}


# --- an independent, row-by-row reading of the rules, to compare against ---------------------------

def listed(copy) -> dict:
    paths = dict(copy.removal)
    urls = {"".join(line.split()).lower() for line in Path(paths["url-sha256"]).read_text().splitlines()
            if line.strip() and not line.startswith("#")}
    with open(paths["image-sha256"]) as f:
        images = {row["image_sha256"].lower() for row in csv.DictReader(f)}
    hashes = set(pq.read_table(paths["laion-hash"])["hash"].to_pylist())
    return {"url": urls, "image": images, "hash": hashes}


def reason_for(url, caption, punsafe, threshold, lists, image_sha=None, flagged=()) -> str | None:
    h = laion_hash(url, caption)
    if hashlib.sha256(url.encode()).hexdigest() in lists["url"]:
        return "url-sha256"
    if h in lists["hash"]:
        return "laion-hash"
    if image_sha is not None and image_sha in lists["image"]:
        return "image-sha256"
    if punsafe is not None and np.float32(punsafe) > np.float32(threshold):
        return "punsafe"
    if h in flagged:
        return "punsafe"
    if caption and "forbiddenword" in caption.lower().split():
        return "keyword"
    return None


def read_dir(directory: Path, pattern: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(directory.glob(pattern))])


def tar_members(path: Path) -> dict[str, tuple]:
    with tarfile.open(path) as tar:
        return {m.name: (m.size, m.mtime, m.mode, m.uname, tar.extractfile(m).read()) for m in tar.getmembers()}


def options(copy, variant, **extra) -> CleanOptions:
    return CleanOptions(remove=tuple(copy.removal), variant=variant, keyword_file=str(copy.keyword_file), **extra)


# --- metadata shards --------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["research", "research-safe"])
def test_metadata_kept_rows_are_exactly_those_no_rule_removes(sample_copy, tmp_path, variant):
    out = tmp_path / "out"
    report = clean_copy(str(sample_copy.metadata_dir), str(out), options(sample_copy, variant), show_progress=False)

    lists = listed(sample_copy)
    source = read_dir(sample_copy.metadata_dir, "*.parquet").to_pylist()
    reasons = [reason_for(r["URL"], r["TEXT"], r["punsafe"], THRESHOLDS[variant], lists) for r in source]
    expected = [r for r, reason in zip(source, reasons) if reason is None]
    assert read_dir(out, "*.parquet").to_pylist() == expected
    assert report.total.kept == len(expected)
    assert dict(report.by_reason) == dict(Counter(r for r in reasons if r))
    assert report.total.rows_in == report.total.kept + report.total.removed == len(source)
    assert set(report.by_reason) == {"url-sha256", "laion-hash", "punsafe", "keyword"}  # every rule exercised


def test_output_schema_and_parquet_metadata_are_the_inputs(sample_copy, tmp_path):
    src = next(sample_copy.metadata_dir.glob("*.parquet"))
    table = pq.read_table(src).replace_schema_metadata({b"origin": b"laion"})
    pq.write_table(table, src, compression="zstd")
    clean_copy(str(sample_copy.metadata_dir), str(tmp_path / "out"), options(sample_copy, "research"), show_progress=False)
    out = tmp_path / "out" / src.name
    assert pq.read_schema(out).equals(pq.read_schema(src), check_metadata=True)
    assert pq.read_schema(out).metadata[b"origin"] == b"laion"
    assert pq.ParquetFile(out).metadata.row_group(0).column(0).compression == "ZSTD"


def test_report_json_is_written_with_per_shard_counts(sample_copy, tmp_path):
    out = tmp_path / "out"
    report = clean_copy(str(sample_copy.metadata_dir), str(out), options(sample_copy, "research"), show_progress=False)
    saved = json.loads((out / "clean_report.json").read_text())
    assert [s["stage"] for s in saved["shards"]] == sorted(p.name.removesuffix(".snappy.parquet") for p in sample_copy.metadata_dir.glob("*.parquet"))
    assert saved["total"]["rows_in"] == saved["total"]["kept"] + saved["total"]["removed"]
    assert saved["by_reason"] == dict(sorted(report.by_reason.items()))
    assert [entry["kind"] for entry in saved["removal_lists"]] == ["url-sha256", "image-sha256", "laion-hash"]


# --- img2dataset download, cleaned alongside the metadata ---------------------------------------------

@pytest.mark.parametrize("variant", ["research", "research-safe"])
def test_download_is_cleaned_alongside_metadata_with_byte_identical_tars(sample_copy, tmp_path, variant):
    out = tmp_path / "out"
    report = clean_copy(
        str(sample_copy.download_dir), str(out),
        options(sample_copy, variant, metadata=str(sample_copy.metadata_dir)), workers=2, show_progress=False,
    )
    lists = listed(sample_copy)
    metadata = read_dir(sample_copy.metadata_dir, "*.parquet").to_pylist()
    flagged = {r["hash"] for r in metadata if r["punsafe"] is not None and np.float32(r["punsafe"]) > np.float32(THRESHOLDS[variant])}
    total = Counter()
    for sidecar in sorted(sample_copy.download_dir.glob("*.parquet")):
        rows = pq.read_table(sidecar).to_pylist()
        reasons = [reason_for(r["url"], r["caption"], None, THRESHOLDS[variant], lists, r["sha256"], flagged) for r in rows]
        total.update(r for r in reasons if r)
        kept = [r for r, reason in zip(rows, reasons) if reason is None]
        assert pq.read_table(out / sidecar.name).to_pylist() == kept  # order (completion order) preserved

        kept_success = {r["key"] for r in kept if r["status"] == "success"}
        source_members = tar_members(sidecar.with_suffix(".tar"))
        out_members = tar_members(out / sidecar.with_suffix(".tar").name)
        assert {name.split(".")[0] for name in out_members} == kept_success
        for name, member in out_members.items():
            assert member == source_members[name]  # header fields and bytes unchanged

        stats = json.loads((out / sidecar.name.replace(".parquet", "_stats.json")).read_text())
        assert stats["count"] == len(kept)
        assert stats["successes"] == len(kept_success)
        assert stats["failed_to_download"] == sum(r["status"] == "failed_to_download" for r in kept)
        assert stats["status_dict"]["success"] == len(kept_success)
    assert dict(report.by_reason) == dict(total)
    assert total["image-sha256"] > 0 and total["punsafe"] > 0
    assert report.image_hash_sources == {"sha256": ["sidecar column sha256 (original downloaded bytes)"]}


def test_image_hashes_are_computed_from_tar_bytes_when_the_sidecar_has_none(sample_copy, tmp_path):
    download = sample_copy.download_dir
    tar_digests = {}
    for sidecar in download.glob("*.parquet"):
        pq.write_table(pq.read_table(sidecar).drop_columns(["sha256"]), sidecar)
        for key, members in iter_samples(str(sidecar.with_suffix(".tar"))):
            tar_digests[key] = hashlib.sha256(image_bytes(members)).hexdigest()
    listed_keys = sorted(tar_digests)[::25]
    image_list = tmp_path / "stored.txt"
    image_list.write_text("".join(tar_digests[k] + "\n" for k in listed_keys))

    out = tmp_path / "out"
    report = clean_copy(str(download), str(out), CleanOptions(remove=(("image-sha256", str(image_list)),)), show_progress=False)
    assert report.by_reason == Counter({"image-sha256": len(listed_keys)})
    assert report.image_hash_sources["sha256"][0].startswith("computed from tar image bytes")
    remaining = set(read_dir(out, "*.parquet")["key"].to_pylist())
    assert not remaining & set(listed_keys)


def test_workers_do_not_change_the_output(sample_copy, tmp_path):
    opts = options(sample_copy, "research-safe", metadata=str(sample_copy.metadata_dir))
    clean_copy(str(sample_copy.download_dir), str(tmp_path / "one"), opts, workers=1, show_progress=False)
    clean_copy(str(sample_copy.download_dir), str(tmp_path / "two"), opts, workers=2, show_progress=False)
    for path in (tmp_path / "one").glob("[0-9]*"):
        if path.suffix in (".parquet", ".tar"):
            assert path.read_bytes() == (tmp_path / "two" / path.name).read_bytes(), path.name


@pytest.mark.parametrize(("cores", "workers"), [(None, 1), (1, 1), (2, 1), (3, 1), (8, 4)])
def test_default_workers_is_one_per_two_cores(monkeypatch, cores, workers):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert default_workers() == workers


def test_keep_reference_keeps_only_rows_of_the_reference(sample_copy, tmp_path):
    rows = read_dir(sample_copy.metadata_dir, "*.parquet")
    reference = tmp_path / "relaion.parquet"
    chosen = rows.slice(0, 100)
    # A Re-LAION-style file: lower-case columns, its own hash column.
    pq.write_table(pa.table({"url": chosen["URL"], "caption": chosen["TEXT"], "hash": chosen["hash"]}), reference)
    out = tmp_path / "out"
    report = clean_copy(str(sample_copy.metadata_dir), str(out), CleanOptions(keep_reference=str(reference)), show_progress=False)
    keep = set(chosen["hash"].to_pylist())
    expected = [r for r in rows.to_pylist() if r["hash"] in keep]
    assert read_dir(out, "*.parquet").to_pylist() == expected
    assert report.by_reason == Counter({"not-in-reference": rows.num_rows - len(expected)})


def test_resuming_with_different_options_is_refused(sample_copy, tmp_path):
    out = tmp_path / "out"
    clean_copy(str(sample_copy.metadata_dir), str(out), options(sample_copy, "research"), show_progress=False)
    with pytest.raises(UserError, match="cleaned with different options"):
        clean_copy(str(sample_copy.metadata_dir), str(out), options(sample_copy, "research-safe"), show_progress=False)


def test_a_shard_where_everything_is_removed_keeps_an_empty_file_with_the_schema(sample_copy, tmp_path):
    src = next(sample_copy.metadata_dir.glob("*.parquet"))
    empty_reference = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"hash": pa.array([], pa.int64())}), empty_reference)
    out = tmp_path / "out"
    report = clean_copy(str(sample_copy.metadata_dir), str(out), CleanOptions(keep_reference=str(empty_reference)), show_progress=False)
    written = pq.read_table(out / src.name)
    assert written.num_rows == 0 and report.total.kept == 0
    assert written.schema.equals(pq.read_schema(src), check_metadata=True)


def test_fsspec_urls_for_input_and_output(sample_copy, tmp_path):
    import fsspec

    memory = fsspec.filesystem("memory")
    for path in sample_copy.download_dir.iterdir():
        memory.pipe(f"/relaion-test/download/{path.name}", path.read_bytes())
    opts = CleanOptions(remove=tuple(sample_copy.removal))
    try:
        remote = clean_copy("memory://relaion-test/download", "memory://relaion-test/out", opts, show_progress=False)
        local = clean_copy(str(sample_copy.download_dir), str(tmp_path / "out"), opts, show_progress=False)
        assert remote.by_reason == local.by_reason and remote.total.kept == local.total.kept
        for name in ("00000.parquet", "00000.tar", "00000_stats.json"):
            assert memory.cat(f"/relaion-test/out/{name}") == (tmp_path / "out" / name).read_bytes(), name
    finally:
        memory.rm("/relaion-test", recursive=True)
