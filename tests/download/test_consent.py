"""The consent step on loopback hosts: robots.txt and tdmrep.json fetched once per origin, rows marked, hostile files bounded."""

from __future__ import annotations

import pickle
import time
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laion_hf.download.consent import consent_shard
from laion_hf.download.options import DownloadOptions
from laion_hf.download.robots import ROBOTS_MAX_BYTES
from laion_hf.steps.download import download
from laion_hf.testing.image_server import ImageServer, Route
from tests.download.images import noise_image

IMAGE = noise_image(1)
SITE_FILES = ("/robots.txt", "/.well-known/tdmrep.json")
OPTIONS = DownloadOptions(allow_private_network=True, timeout=2, deadline=3)


def write_input(directory: Path, urls: list[str], **columns) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"url": urls, "caption": [f"c{i}" for i in range(len(urls))], **columns}),
                   directory / "00000.parquet")
    return str(directory)


def judge(tmp_path: Path, urls: list[str], options: DownloadOptions = OPTIONS, **columns) -> tuple[list, dict]:
    """Run the consent step on ``urls``; the marked rows and its stats."""
    stats = consent_shard("00000", write_input(tmp_path / "in", urls, **columns), str(tmp_path / "out"), options)
    return pq.read_table(tmp_path / "out" / "00000.parquet").to_pylist(), stats["stages"][0]


def test_rows_are_marked_by_robots_txt_and_tdmrep_with_evidence(tmp_path):
    with ImageServer() as server:
        server.robots_txt("User-agent: *\nDisallow: /private/\n\nUser-agent: GPTBot\nDisallow: /gpt-only/\n")
        server.tdmrep([{"location": "/reserved/*", "tdm-reservation": 1, "tdm-policy": "https://policy.example/p.json"}])
        urls = [server.url(p) for p in ("/a.jpg", "/private/b.jpg", "/gpt-only/c.jpg", "/reserved/d.jpg")]
        rows, stats = judge(tmp_path, urls)
    assert [r["drop_reason"] for r in rows] == [None, "opted-out:robots-txt", "opted-out:robots-txt", "opted-out:tdmrep"]
    assert "user-agent laion-hf" in rows[1]["consent_evidence"] and "user-agent GPTBot" in rows[2]["consent_evidence"]
    assert rows[3]["consent_evidence"].endswith("rule 0 location '/reserved/*': tdm-reservation 1, tdm-policy https://policy.example/p.json")
    assert rows[0]["consent_evidence"] is None and rows[1]["consent_checked_at"].endswith("Z")
    assert stats == {**stats, "rows_in": 4, "kept": 1, "dropped": {"opted-out:robots-txt": 2, "opted-out:tdmrep": 1}}
    assert [r["url"] for r in rows] == urls and list(rows[0])[:2] == ["url", "caption"]  # same rows, same order


def test_robots_txt_unreachable_disallows_the_host_and_4xx_allows_it(tmp_path):
    with ImageServer(host="127.0.0.3") as dead:
        dead_url = dead.url("/a.jpg")  # once it has stopped, nothing listens there
    with ImageServer() as down, ImageServer(host="127.0.0.2") as forbidden:
        down.robots_txt("", status=503)
        forbidden.robots_txt("", status=403)
        rows, stats = judge(tmp_path, [down.url("/a.jpg"), forbidden.url("/a.jpg"), dead_url])
    assert [r["drop_reason"] for r in rows] == ["robots-txt-unreachable", None, "robots-txt-unreachable"]
    assert stats["dropped"] == {"robots-txt-unreachable": 2}
    assert down.requests == ["/robots.txt"]  # unreachable: tdmrep.json is not asked for


def test_each_origin_is_asked_once_per_run_across_processes(tmp_path):
    """Many shards on two hosts, two worker processes: each host sees one robots.txt and one tdmrep.json request."""
    with ImageServer() as one, ImageServer(host="127.0.0.2") as two:
        one.robots_txt("User-agent: *\nDisallow: /no/")
        urls = []
        for i in range(24):
            server = one if i % 2 else two
            urls.append(server.image(f"/img/{i}.jpg", IMAGE) if i % 3 else server.url(f"/no/{i}.jpg"))
        candidates = tmp_path / "candidates.parquet"
        pq.write_table(pa.table({"url": urls, "caption": [f"c{i}" for i in range(24)]}), candidates)
        report = download(str(candidates), str(tmp_path / "out"), allow_private_network=True, processes=2,
                          rows_per_shard=3, show_progress=False)
        for server in (one, two):
            counts = server.request_counts()
            assert [counts[path] for path in SITE_FILES] == [1, 1]
    assert report.opted_out == {"robots-txt": 4}  # /no/ on host one: i odd and a multiple of 3 -> 3, 9, 15, 21
    assert report.kept == 16 and report.dropped == {"robots-txt": 4, "http-404": 4}


def test_rows_an_earlier_step_marked_keep_their_reason_and_are_not_judged(tmp_path):
    with ImageServer() as server:
        server.robots_txt("User-agent: *\nDisallow: /")
        rows, stats = judge(tmp_path, [server.url("/a.jpg")], drop_reason=pa.array(["language"], pa.string()))
        assert server.requests == []
    assert rows[0]["drop_reason"] == "language" and rows[0]["consent_evidence"] is None
    assert (stats["rows_in"], stats["kept"], stats["dropped"]) == (0, 0, {})


def test_a_refused_host_is_left_to_the_download_and_never_contacted(tmp_path):
    with ImageServer() as server:
        server.robots_txt("User-agent: *\nDisallow: /")
        rows, _ = judge(tmp_path, [server.url("/a.jpg"), "ftp://x.example/a.jpg"], DownloadOptions(timeout=2))
        assert server.requests == []
    assert [r["drop_reason"] for r in rows] == [None, None]


def test_the_task_is_picklable_and_writes_atomically(tmp_path):
    task = partial(consent_shard, input_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"), options=OPTIONS)
    assert pickle.loads(pickle.dumps(task)).keywords["options"] == OPTIONS
    with ImageServer() as server:
        judge(tmp_path, [server.url("/a.jpg")])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["."  + "laion-hf", "00000.parquet"]


def test_only_the_respected_rules_are_fetched(tmp_path):
    with ImageServer() as server:
        server.robots_txt("User-agent: *\nDisallow: /")
        server.tdmrep([{"location": "/", "tdm-reservation": 1}])
        rows, _ = judge(tmp_path, [server.url("/a.jpg")], DownloadOptions(allow_private_network=True, respect=("tdmrep",)))
        assert server.requests == ["/.well-known/tdmrep.json"]
    assert rows[0]["drop_reason"] == "opted-out:tdmrep"


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param(lambda s: s.route("/robots.txt", Route(content_type="text/plain", stream_bytes=64 << 20)), id="huge"),
        pytest.param(lambda s: s.route("/robots.txt", Route(content_type="text/plain", declared_length=10**12, stream_bytes=8 << 20)),
                     id="declares-a-terabyte"),
        pytest.param(lambda s: s.redirect_chain("/robots.txt", 50, "/robots.txt"), id="endless-redirects"),
        pytest.param(lambda s: s.route("/robots.txt", Route(body=bytes(range(256)) * 4096)), id="binary"),
    ],
)
def test_a_hostile_robots_txt_is_bounded_and_allows(tmp_path, hostile):
    with ImageServer() as server:
        hostile(server)
        rows, _ = judge(tmp_path, [server.url("/a.jpg")])
        assert server.bytes_sent("/robots.txt") < ROBOTS_MAX_BYTES + (8 << 20)  # read stops at the cap
    assert rows[0]["drop_reason"] is None


def test_a_dripping_robots_txt_cannot_hold_the_step_past_its_deadline(tmp_path):
    with ImageServer() as server:
        server.drip("/robots.txt", b"User-agent: *\nAllow: /\n" * 100, interval=0.05, give_up_after=60)
        started = time.monotonic()
        rows, _ = judge(tmp_path, [server.url("/a.jpg")])
        waited = time.monotonic() - started
    assert rows[0]["drop_reason"] == "robots-txt-unreachable" and "deadline" in rows[0]["consent_evidence"]
    assert waited < 30  # the deadline is 3 s; the drip would take 100+ s
