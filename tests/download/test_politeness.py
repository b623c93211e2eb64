"""Per-host politeness seen from the servers' own request logs: concurrency cap, rate, Retry-After, back-off."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.download.consent import origin_of_url as host_of
from laion_hf.download.images import ImageProcessor
from laion_hf.download.options import DownloadOptions
from laion_hf.download.politeness import HOST_FAILING, HostLimits, HostSignal, polite_map
from laion_hf.download.shard import _host_failing, download_one, fetcher_for
from laion_hf.steps.download import download
from laion_hf.testing.image_server import ImageServer, Route
from tests.download.images import noise_image

IMAGE = noise_image(2)
ONLY_HEADERS = ("x-robots-tag",)  # no robots.txt / tdmrep.json requests in these logs


def fetch_all(tmp_path: Path, urls: list[str], **options) -> list[dict]:
    candidates = tmp_path / "candidates.parquet"
    pq.write_table(pa.table({"url": urls, "caption": [f"c{i}" for i in range(len(urls))]}), candidates)
    download(str(candidates), str(tmp_path / "out"), allow_private_network=True, respect=ONLY_HEADERS,
             show_progress=False, **options)
    return pq.read_table(tmp_path / "out" / "00000.parquet").to_pylist()


def test_each_host_gets_at_most_its_cap_while_the_pool_serves_other_hosts(tmp_path):
    with ImageServer() as one, ImageServer(host="127.0.0.2") as two:
        urls = []
        for i in range(8):
            for server in (one, two):
                urls.append(server.slow(f"/{i}.png", IMAGE, delay=0.3))
        rows = fetch_all(tmp_path, urls, threads=8, host_concurrency=2, host_rate=1000)
        assert [one.peak_concurrency, two.peak_concurrency] == [2, 2]
        first_two, last_one = min(r.time for r in two.log), max(r.time for r in one.log)
    assert [r["status"] for r in rows] == ["success"] * 16
    assert first_two < last_one  # the hosts were served side by side, not one after the other


def test_requests_to_a_host_are_started_at_its_rate():
    started: dict[str, list[float]] = {"a": [], "b": []}

    def work(url):
        started[url.split("/")[2]].append(time.monotonic())
        return url

    urls = [f"http://{host}/{i}.png" for i in range(6) for host in ("a", "b")]
    done = dict(polite_map(urls, work, host_of=host_of, signal_of=lambda _: HostSignal(), give_up=lambda url: None,
                           threads=8, limits=HostLimits(rate=5)))
    assert sorted(done) == list(range(12))
    for times in started.values():  # each host: one start every 0.2 s (less a thread's start-up), side by side
        assert len(times) == 6 and min(b - a for a, b in zip(times, times[1:])) >= 0.15
        assert times[-1] - times[0] >= 0.95
    assert abs(started["a"][0] - started["b"][0]) < 0.2


def test_a_host_sees_the_rate_in_its_log(tmp_path):
    with ImageServer() as server:
        urls = [server.image(f"/{i}.png", IMAGE) for i in range(6)]
        fetch_all(tmp_path, urls, threads=8, host_rate=5)
        times = sorted(r.time for r in server.log)
    assert len(times) == 6 and times[-1] - times[0] >= 0.8  # 5 gaps of 0.2 s, less the first request's travel


def test_retry_after_is_honoured_and_the_row_retried(tmp_path):
    with ImageServer() as server:
        url = server.rate_limited("/busy.png", IMAGE, refusals=1, retry_after="1")
        rows = fetch_all(tmp_path, [url], threads=4)
        log = server.log
    assert [r.path for r in log] == ["/busy.png", "/busy.png"]
    assert log[1].time - log[0].time >= 1.0 - 0.01
    assert rows[0]["status"] == "success"


def test_a_retry_after_longer_than_the_limit_is_a_counted_failure(tmp_path):
    with ImageServer() as server:
        url = server.rate_limited("/busy.png", IMAGE, refusals=5, retry_after="120")
        rows = fetch_all(tmp_path, [url], threads=4, max_retry_after=10)
        assert server.requests == ["/busy.png"]
    assert (rows[0]["status"], rows[0]["error_reason"]) == ("failed_to_download", "http-429")


def test_a_host_that_keeps_failing_is_backed_off_then_given_up():
    limits = HostLimits(failure_threshold=2, backoff=0.2, give_up_after=4, rate=1000)
    with ImageServer() as failing, ImageServer(host="127.0.0.2") as good:
        urls = [failing.route(f"/{i}.png", Route(status=503)) for i in range(10)]
        urls += [good.image(f"/{i}.png", IMAGE) for i in range(3)]
        options = DownloadOptions(allow_private_network=True, respect=ONLY_HEADERS)
        with fetcher_for(options) as fetcher:
            work = partial(download_one, fetcher=fetcher, process=ImageProcessor(options))
            results = dict(polite_map(urls, work, host_of=host_of, signal_of=lambda o: o.signal,
                                      give_up=_host_failing, threads=1, limits=limits))
        times = [r.time for r in failing.log]
    reasons = [results[i].reason for i in range(13)]
    assert reasons == ["http-503"] * 4 + [HOST_FAILING] * 6 + [None] * 3
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps[1:]) >= 0.2 - 0.01  # after the 2nd failure in a row: 0.2 s, then 0.4 s
    assert gaps[2] >= 0.4 - 0.01


def test_rows_without_a_host_are_not_held_back():
    limits = HostLimits(concurrency=1, rate=0.001)
    results = dict(polite_map(["ftp://x/a", None, "http://"], lambda url: url, host_of=host_of,
                              signal_of=lambda _: HostSignal(),
                              give_up=lambda url: None, threads=2, limits=limits))
    assert results == {0: "ftp://x/a", 1: None, 2: "http://"}


def test_retry_after_values():
    from laion_hf.download.fetch import retry_after_seconds

    now = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds(" 0 ", now) == 0.0
    assert retry_after_seconds("Tue, 14 Nov 2023 22:13:50 GMT", now) == 30.0
    assert retry_after_seconds("Tue, 14 Nov 2023 22:00:00 GMT", now) == 0.0  # a date in the past: now
    assert retry_after_seconds("-5", now) is None and retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None
