"""``extract`` end to end on generated WAT files: rules, stats, damage, dedup, resume, inputs."""

from __future__ import annotations

import gzip
import logging
import os

import pyarrow.parquet as pq
import pytest

from laion_hf.core.hashing import laion_hash
from laion_hf.extract import CANDIDATE_SCHEMA, expand_inputs
from laion_hf.extract.extract import REPORT_FILE, ExtractInputError
from laion_hf.extract.wat import UnreadableInputError
from laion_hf.io.atomic import read_json
from laion_hf.steps.extract import extract
from laion_hf.testing.wat import Image, Page, write_wat
from tests.extract.wat_cases import DAMAGED_GOOD_PAIRS, RULE_DROPS, RULE_PAIRS, write_damaged_wat, write_rule_wat


def rows(path: str) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_rule_cases_give_exactly_the_expected_pairs_and_counts(tmp_path):
    wat = str(tmp_path / "rules.warc.wat.gz")
    write_rule_wat(wat)
    report = extract([wat], str(tmp_path / "out"), show_progress=False)

    table = pq.read_table(report.shards[0])
    assert table.schema.equals(CANDIDATE_SCHEMA)
    got = table.to_pylist()
    assert [(r["url"], r["caption"], r["page_url"], r["license"]) for r in got] == RULE_PAIRS
    assert all(r["hash"] == laion_hash(r["url"], r["caption"]) for r in got)
    assert {r["cc_filename"] for r in got} == {"CC-MAIN-rules.warc.gz"}
    assert {r["language"] for r in got} <= {"en", "fr", ""}

    stats = report.files["rules.warc.wat"]
    assert stats["records"] == 12 and stats["response_pages"] == 4
    assert stats["img_links"] == 19 == stats["rows_in"]
    assert stats["kept"] == len(RULE_PAIRS)
    assert stats["dropped"] == RULE_DROPS
    assert stats["malformed"] == {}
    assert report.total.rows_in == report.total.kept + report.total.removed
    assert read_json(os.path.join(report.output_dir, REPORT_FILE))["total"]["kept"] == len(RULE_PAIRS)


def test_damaged_records_are_counted_with_offsets_and_the_rest_is_kept(tmp_path, caplog):
    wat = str(tmp_path / "damaged.warc.wat.gz")
    offsets = write_damaged_wat(wat)
    with caplog.at_level(logging.WARNING):
        report = extract([wat], str(tmp_path / "out"), show_progress=False)

    assert {(r["url"], r["caption"]) for r in rows(report.shards[0])} == DAMAGED_GOOD_PAIRS
    stats = report.files["damaged.warc.wat"]
    assert stats["malformed"] == {"corrupt_gzip": 1, "invalid_json": 1, "invalid_utf8": 1, "missing_keys": 1}
    listed = {(m["reason"], m["offset"]) for m in stats["malformed_records"]}
    assert listed == {(reason, offset) for reason, offset in offsets.items()}
    assert all(m["file"] == wat for m in stats["malformed_records"])
    assert f"{wat} at byte {offsets['corrupt_gzip']}: corrupt_gzip" in caplog.text
    assert report.malformed["invalid_utf8"] == 1


def test_truncated_last_record_is_counted(tmp_path):
    wat = str(tmp_path / "cut.warc.wat.gz")
    write_wat(wat, [Page(url=f"https://ex.com/{i}", images=[Image(f"/{i}.jpg", f"picture number {i}")]) for i in range(3)])
    data = open(wat, "rb").read()
    with open(wat, "wb") as f:
        f.write(data[:-150])  # the download stopped inside the last record
    report = extract([wat], str(tmp_path / "out"), show_progress=False)
    stats = report.files["cut.warc.wat"]
    assert stats["kept"] == 3
    assert sum(stats["malformed"].values()) == 1


def test_an_unreadable_input_is_an_error_naming_it(tmp_path):
    missing = str(tmp_path / "missing.warc.wat.gz")
    with pytest.raises(UnreadableInputError, match="missing.warc.wat.gz"):
        extract([missing], str(tmp_path / "out"), show_progress=False)
    not_wat = tmp_path / "notes.warc.wat.gz"
    not_wat.write_bytes(gzip.compress(b"just some text, not a WARC file\n"))
    with pytest.raises(UnreadableInputError, match="notes.warc.wat.gz"):
        extract([str(not_wat)], str(tmp_path / "out2"), show_progress=False)


def _site(tmp_path, name: str, pairs: list[tuple[str, str]]) -> str:
    path = str(tmp_path / "in" / f"{name}.warc.wat.gz")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return write_wat(path, [Page(url=f"https://{name}.example/", images=[Image(u, c) for u, c in pairs])])


def test_global_dedup_keeps_the_first_file_and_counts_the_rest(tmp_path):
    shared = ("https://cdn.example/shared.jpg", "the same picture everywhere")
    a = _site(tmp_path, "a", [shared, ("https://cdn.example/a.jpg", "only in file a")])
    b = _site(tmp_path, "b", [("https://cdn.example/b.jpg", "only in file b"), shared, shared])
    c = _site(tmp_path, "c", [("https://cdn.example/shared.jpg", "same url, other caption")])
    report = extract([a, b, c], str(tmp_path / "out"), show_progress=False)

    assert [(r["url"], r["caption"]) for r in rows(report.shards[0])] == [shared, ("https://cdn.example/a.jpg", "only in file a")]
    assert [(r["url"], r["caption"]) for r in rows(report.shards[1])] == [("https://cdn.example/b.jpg", "only in file b")]
    assert len(rows(report.shards[2])) == 1
    assert report.files["b.warc.wat"]["dropped"] == {"duplicate_global": 1, "duplicate_in_file": 1}
    assert report.total.kept == 4 and report.total.rows_in == 6

    unique = extract([a, b, c], str(tmp_path / "no-global"), show_progress=False, global_dedup=False)
    assert unique.total.kept == 5


@pytest.mark.slow
def test_parallel_workers_and_resume_give_the_same_result(tmp_path):
    inputs = [
        _site(tmp_path, f"s{i}", [(f"https://cdn.example/{j % 4}.jpg", f"caption number {j % 4}") for j in range(i + 3)])
        for i in range(4)
    ]
    serial = extract(inputs, str(tmp_path / "serial"), show_progress=False)
    parallel = extract(inputs, str(tmp_path / "parallel"), workers=2, show_progress=False)
    assert [rows(s) for s in serial.shards] == [rows(s) for s in parallel.shards]
    assert serial.total.to_dict() | {"seconds": 0} == parallel.total.to_dict() | {"seconds": 0}

    # a run that crashed on the third file: the finished files keep their markers, the rest is redone
    out = str(tmp_path / "resumed")
    broken = inputs[2] + ".moved"
    os.rename(inputs[2], broken)
    with pytest.raises(UnreadableInputError, match="s2.warc.wat.gz"):
        extract(inputs, out, show_progress=False)
    os.rename(broken, inputs[2])
    markers = os.path.join(out, "_files", ".laion-hf", "done")
    finished = sorted(p for p in os.listdir(markers) if p.endswith(".json"))
    assert finished == ["s0.warc.wat.json", "s1.warc.wat.json"]  # the serial runner stops at the error
    marker_times = {p: os.path.getmtime(os.path.join(markers, p)) for p in finished}
    resumed = extract(inputs, out, show_progress=False)
    assert {p: os.path.getmtime(os.path.join(markers, p)) for p in finished} == marker_times
    assert [rows(s) for s in resumed.shards] == [rows(s) for s in serial.shards]
    assert resumed.total.to_dict() | {"seconds": 0} == serial.total.to_dict() | {"seconds": 0}


def test_inputs_from_globs_and_a_wat_paths_listing(tmp_path):
    a = _site(tmp_path, "a", [("https://cdn.example/a.jpg", "picture of a")])
    b = _site(tmp_path, "b", [("https://cdn.example/b.jpg", "picture of b")])
    assert [w.path for w in expand_inputs([str(tmp_path / "in" / "*.warc.wat.gz")])] == [a, b]

    listing = tmp_path / "wat.paths.gz"
    listing.write_bytes(gzip.compress(b"crawl-data/CC-MAIN-2023-23/segments/1/wat/x.warc.wat.gz\n" + f"{b}\n".encode()))
    named = expand_inputs([str(listing)], listing_prefix="https://data.commoncrawl.org/")
    assert [w.path for w in named] == ["https://data.commoncrawl.org/crawl-data/CC-MAIN-2023-23/segments/1/wat/x.warc.wat.gz", b]
    assert [w.name for w in named] == ["x.warc.wat", "b.warc.wat"]

    with pytest.raises(ExtractInputError, match="no file matches"):
        expand_inputs([str(tmp_path / "in" / "*.nothing")])
    with pytest.raises(ExtractInputError, match="same file name"):
        expand_inputs([a, str(tmp_path / "in" / "." / "a.warc.wat.gz")])


def test_fsspec_urls_are_read_and_written(tmp_path):
    import fsspec

    local = _site(tmp_path, "m", [("https://cdn.example/m.jpg", "picture in memory")])
    with fsspec.open("memory://wat/m.warc.wat.gz", "wb") as f:
        f.write(open(local, "rb").read())
    report = extract(["memory://wat/m.warc.wat.gz"], "memory://out", show_progress=False)
    with fsspec.open(report.shards[0], "rb") as f:
        assert [r["caption"] for r in pq.read_table(f).to_pylist()] == ["picture in memory"]


def test_a_re_extracted_file_redoes_the_global_dedup(tmp_path):
    a = _site(tmp_path, "a", [("https://cdn.example/x.jpg", "picture of x")])
    b = _site(tmp_path, "b", [("https://cdn.example/x.jpg", "picture of x")])
    out = str(tmp_path / "out")
    assert extract([a, b], out, show_progress=False).total.kept == 1
    again = extract([a, b], out, show_progress=False)  # nothing to redo: same result from the markers
    assert again.total.kept == 1 and again.files["b.warc.wat"]["dropped"] == {"duplicate_global": 1}

    _site(tmp_path, "b", [("https://cdn.example/y.jpg", "picture of y")])  # b changed, its marker removed
    os.remove(os.path.join(out, "_files", ".laion-hf", "done", "b.warc.wat.json"))
    redone = extract([a, b], out, show_progress=False)
    assert redone.total.kept == 2
    assert [r["caption"] for r in rows(redone.shards[1])] == ["picture of y"]


def test_an_empty_wat_file_is_counted_as_malformed_and_named(tmp_path):
    """A 0-byte file (a download cut before its first byte) is not a silently empty crawl segment."""
    good = _site(tmp_path, "a", [("https://cdn.example/a.jpg", "picture of a")])
    empty = tmp_path / "in" / "b.warc.wat.gz"
    empty.write_bytes(b"")
    report = extract([good, str(empty)], str(tmp_path / "out"), show_progress=False)
    assert report.malformed == {"empty_file": 1}
    assert report.files["b.warc.wat"]["malformed_records"] == [
        {"reason": "empty_file", "file": str(empty), "offset": 0, "detail": "0 bytes"}]
    assert report.total.kept == 1
