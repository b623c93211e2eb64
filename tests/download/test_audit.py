"""The audit trail end to end: every opted-out row keeps its place and reason, the report counts them by reason,
and the exported list removes them from another copy as a url-md5 removal list."""

from __future__ import annotations

import csv
import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from laion_hf.cli import app
from laion_hf.io.removal_lists import load_list
from laion_hf.testing.image_server import ImageServer
from tests.download.images import noise_image

#: path -> (status, error_reason) on the consenting host; the other hosts are set up below
EXPECTED = {
    "/ok.png": ("success", None),
    "/private/a.png": ("opted-out", "robots-txt"),
    "/gpt/a.png": ("opted-out", "robots-txt"),
    "/reserved/a.png": ("opted-out", "tdmrep"),
    "/header-tdm.png": ("opted-out", "tdm-reservation"),
    "/noml.png": ("opted-out", "x-robots-tag:noml"),
    "/scoped-gptbot.png": ("opted-out", "x-robots-tag:noai"),
    "/scoped-other.png": ("success", None),
}


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit")
    image = noise_image(3)
    with ImageServer() as site, ImageServer(host="127.0.0.2") as down:
        site.robots_txt("User-agent: *\nDisallow: /private/\n\nUser-agent: GPTBot\nDisallow: /gpt/\n")
        site.tdmrep([{"location": "/reserved/", "tdm-reservation": 1}])
        for path in ("/ok.png", "/private/a.png", "/gpt/a.png", "/reserved/a.png"):
            site.image(path, image)
        site.tdm_reserved("/header-tdm.png", image, policy="https://policy.example/p.json")
        site.no_ai("/noml.png", image, directive="noml")
        site.no_ai("/scoped-gptbot.png", image, directive="GPTBot: noai")
        site.no_ai("/scoped-other.png", image, directive="otherbot: noai")
        down.robots_txt("oops", status=500)
        urls = [site.url(path) for path in EXPECTED] + [down.image("/a.png", image)]
        candidates = tmp / "candidates.parquet"
        pq.write_table(pa.table({"url": urls, "caption": [f"caption {i}" for i in range(len(urls))]}), candidates)
        result = CliRunner().invoke(app, ["download", str(candidates), str(tmp / "out"), "--allow-private-network",
                                          "--rows-per-shard", "4", "--timeout", "3"])
        assert result.exit_code == 0, result.output
        yield {"out": tmp / "out", "urls": urls, "candidates": candidates, "output": result.output, "tmp": tmp}


def rows_of(out):
    return [r for shard in sorted(out.glob("*.parquet")) for r in pq.read_table(shard).to_pylist()]


def test_every_row_keeps_its_place_with_status_and_reason(downloaded):
    rows = rows_of(downloaded["out"])
    assert [r["url"] for r in rows] == downloaded["urls"]
    outcome = {"/" + r["url"].split("/", 3)[3]: (r["status"], r["error_reason"]) for r in rows[:-1]}
    assert outcome == EXPECTED
    assert (rows[-1]["status"], rows[-1]["error_reason"]) == ("failed_to_download", "robots-txt-unreachable")
    assert "drop_reason" not in rows[0] and "consent_evidence" not in rows[0]
    by_path = {r["url"].rsplit("/", 1)[-1]: r for r in rows}
    assert by_path["header-tdm.png"]["error_message"] == (
        "TDM rights reserved by header tdm-reservation: 1 (tdm-policy: https://policy.example/p.json)")


def test_the_report_counts_opt_outs_by_reason(downloaded):
    report = json.loads((downloaded["out"] / "download_report.json").read_text())
    assert report["opted_out"] == {"robots-txt": 2, "tdm-reservation": 1, "tdmrep": 1, "x-robots-tag:noai": 1,
                                   "x-robots-tag:noml": 1}
    assert report["kept"] == 2 and report["rows_in"] == 9
    assert report["dropped"] == {**report["opted_out"], "robots-txt-unreachable": 1}
    assert "(opted out)" in downloaded["output"]
    assert "6 row(s) opted out by their sites" in downloaded["output"]


def test_the_exported_list_names_each_opt_out_with_evidence_and_time(downloaded, tmp_path):
    path = tmp_path / "opt-outs.csv"
    result = CliRunner().invoke(app, ["opt-outs", str(downloaded["out"]), str(path)])
    assert result.exit_code == 0, result.output
    with open(path, newline="", encoding="utf-8") as f:
        records = list(csv.DictReader(f))
    opted = [u for u in downloaded["urls"] if EXPECTED.get("/" + u.split("/", 3)[3], ("",))[0] == "opted-out"]
    assert sorted(r["url"] for r in records) == sorted(opted)
    for record in records:
        assert record["url_md5"] == hashlib.md5(record["url"].encode()).hexdigest()
        assert record["host"] == "127.0.0.1" and record["evidence"] and record["checked_at"].endswith("Z")
    robots = next(r for r in records if r["url"].endswith("/gpt/a.png"))
    assert robots["reason"] == "robots-txt" and robots["evidence"].endswith("disallows it for user-agent GPTBot")
    assert set(load_list("url-md5", str(path)).values.to_pylist()) == {hashlib.md5(u.encode()).digest() for u in opted}


def test_clean_applies_the_list_to_another_copy(downloaded, tmp_path):
    listed = tmp_path / "opt-outs.parquet"
    assert CliRunner().invoke(app, ["opt-outs", str(downloaded["out"]), str(listed)]).exit_code == 0
    metadata = tmp_path / "metadata"
    metadata.mkdir()
    pq.write_table(pq.read_table(downloaded["candidates"]), metadata / "part-00000.parquet")
    result = CliRunner().invoke(app, ["clean", str(metadata), str(tmp_path / "clean"), "--remove", f"url-md5={listed}"])
    assert result.exit_code == 0, result.output
    kept = {r["url"] for p in (tmp_path / "clean").glob("*.parquet") for r in pq.read_table(p).to_pylist()}
    assert kept == {u for u in downloaded["urls"] if EXPECTED.get("/" + u.split("/", 3)[3], ("success",))[0] != "opted-out"}


def test_the_card_states_the_opt_outs_apart_from_the_failures(downloaded, tmp_path):
    from laion_hf.hub.publish import publish_folder

    publish_folder({"default": str(downloaded["out"])}, tmp_path / "hub", family="laion5b")
    text = (tmp_path / "hub" / "README.md").read_text(encoding="utf-8")
    assert ("- downloaded: 2 of 9 images saved (22.2%); opted out by their sites: robots-txt 2, tdm-reservation 1, "
            "tdmrep 1, x-robots-tag:noai 1, x-robots-tag:noml 1; failed: robots-txt-unreachable 1\n") in text
