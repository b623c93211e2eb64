"""download: img2dataset against the loopback image server, with our policy, checks, reasons and retries."""

from __future__ import annotations

import io
import random
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from laion_hf.cli import app

from laion_hf.demo.image_server import ImageServer, corrupt_image, huge_png
from laion_hf.hashing import laion_hash
from laion_hf.io.atomic import read_json
from laion_hf.io.shards import discover_shards
from laion_hf.io.tar import iter_samples, write_samples
from laion_hf.stages.download import (
    MIN_IMAGE_BYTES,
    AddressPolicy,
    DownloadOptions,
    check_image,
    download,
    error_reason,
)


def noise_image(seed: int, size: int = 64, fmt: str = "PNG") -> bytes:
    """Incompressible pixels: a 64x64 PNG is ~12 KB, safely over the 5 KB rule."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (size, size), bytes(rng.randrange(256) for _ in range(size * size * 3)))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


TIMEOUT = 3  # seconds: generous for good images on a loaded 2-core machine; the slow route waits 4x longer
GOOD_PNG = noise_image(1)
GOOD_JPEG = noise_image(2, size=96, fmt="JPEG")
SMALL_PNG = noise_image(3, size=8)

#: path -> (expected status, expected error_reason)
EXPECTED = {
    "/good.png": ("success", None),
    "/good.jpg": ("success", None),
    "/moved.png": ("success", None),
    "/gone.png": ("failed_to_download", "http-404"),
    "/slow.png": ("failed_to_download", "timeout"),
    "/small.png": ("failed_to_resize", "image-under-5kb"),
    "/huge.png": ("failed_to_resize", "image-too-large"),
    "/corrupt.jpg": ("failed_to_resize", "decode-error"),
    "/noai.png": ("failed_to_download", "x-robots-tag"),
    "/noimageai.png": ("failed_to_download", "x-robots-tag"),
}


def serve_everything(server: ImageServer) -> list[str]:
    server.image("/good.png", GOOD_PNG)
    server.image("/good.jpg", GOOD_JPEG)
    server.redirect("/moved.png", "/good.png")
    server.missing("/gone.png")
    server.slow("/slow.png", GOOD_PNG, delay=4 * TIMEOUT)
    server.image("/small.png", SMALL_PNG)
    server.huge("/huge.png")
    server.corrupt("/corrupt.jpg")
    server.no_ai("/noai.png", GOOD_PNG, directive="noai")
    server.no_ai("/noimageai.png", GOOD_PNG, directive="noimageai")
    return [server.url(path) for path in EXPECTED]


def write_candidates(path: Path, urls: list[str]) -> Path:
    n = len(urls)
    pq.write_table(
        pa.table({
            "url": urls,
            "caption": [f"caption {i}" for i in range(n)],
            "page_url": [f"https://example.org/page/{i}" for i in range(n)],
            "language": ["en", "de"] * (n // 2) + ["en"] * (n % 2),
            "license": [None] * (n - 1) + ["https://creativecommons.org/licenses/by/4.0/"],
        }),
        path,
    )
    return path


def read_rows(output: Path) -> list[dict]:
    return [row for shard in discover_shards(str(output)) for row in pq.read_table(shard.parquet).to_pylist()]


def read_tar_samples(output: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for shard in discover_shards(str(output)):
        for key, members in iter_samples(shard.tar):
            assert key not in samples, f"key {key} twice in the tars"
            samples[key] = members
    return samples


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    """One real download of every kind of answer, kept running for the retry test."""
    tmp = tmp_path_factory.mktemp("download")
    with ImageServer() as server:
        urls = serve_everything(server)
        candidates = write_candidates(tmp / "candidates.parquet", urls)
        output = tmp / "out"
        report = download(str(candidates), str(output), allow_private_network=True, timeout=TIMEOUT,
                          rows_per_shard=4, show_progress=False)
        yield {"server": server, "output": output, "report": report, "urls": urls, "candidates": candidates}


@pytest.mark.slow
def test_every_answer_ends_with_the_right_status_and_reason(downloaded):
    rows = read_rows(downloaded["output"])
    assert len(rows) == len(EXPECTED)
    outcome = {path_of(r["url"]): (r["status"], r["error_reason"]) for r in rows}
    assert outcome == EXPECTED


@pytest.mark.slow
def test_counts_add_up_in_the_report_and_stats_files(downloaded):
    report = downloaded["report"]
    assert report.rows_in == len(EXPECTED) == report.kept + report.removed
    expected_reasons = Counter(reason for _, reason in EXPECTED.values() if reason)
    assert report.dropped == expected_reasons
    assert report.kept == 3
    written = read_json(str(downloaded["output"] / "download_report.json"))
    assert written["dropped"] == dict(sorted(expected_reasons.items()))
    assert written["success_rate"] == pytest.approx(0.3)
    stats = [read_json(str(s.stats)) for s in discover_shards(str(downloaded["output"]))]
    assert sum(s["count"] for s in stats) == len(EXPECTED)
    assert sum(s["successes"] for s in stats) == 3


@pytest.mark.slow
def test_good_images_keep_original_bytes_true_extension_and_our_columns(downloaded):
    rows = {r["key"]: r for r in read_rows(downloaded["output"])}
    samples = read_tar_samples(downloaded["output"])
    assert set(samples) == {k for k, r in rows.items() if r["status"] == "success"}
    served = {"/good.png": ("png", GOOD_PNG), "/good.jpg": ("jpg", GOOD_JPEG), "/moved.png": ("png", GOOD_PNG)}
    for key, members in samples.items():
        row = rows[key]
        extension, data = served[path_of(row["url"])]
        assert members[extension] == data  # byte-identical, never re-encoded
        assert members["txt"].decode() == row["caption"]
        assert (row["width"], row["height"]) == Image.open(io.BytesIO(data)).size
        assert row["hash"] == laion_hash(row["url"], row["caption"])
        assert row["page_url"].startswith("https://example.org/page/")
        assert row["language"] in ("en", "de")
    assert not any(name.startswith("laion_hf_") for name in pq.read_schema(discover_shards(str(downloaded["output"]))[0].parquet).names)


@pytest.mark.slow
def test_rerunning_a_finished_download_fetches_nothing(downloaded):
    server = downloaded["server"]
    server.clear_requests()
    again = download(str(downloaded["candidates"]), str(downloaded["output"]), allow_private_network=True,
                     timeout=TIMEOUT, rows_per_shard=4, show_progress=False)
    assert server.requests == []
    assert again.to_dict()["dropped"] == downloaded["report"].to_dict()["dropped"]


@pytest.mark.slow
def test_cli_retry_failed_fetches_only_failures_and_merges_under_the_original_key(downloaded, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(downloaded["output"], output)
    before = {path_of(r["url"]): r for r in read_rows(output)}
    # As if an earlier merge crashed after renaming the tar but before the parquet: stale samples of failed keys.
    stale_keys = {before["/gone.png"]["key"], before["/slow.png"]["key"]}
    for shard in discover_shards(str(output)):
        keys = set(pq.read_table(shard.parquet)["key"].to_pylist()) & stale_keys
        if keys:
            samples = [*iter_samples(shard.tar), *((key, {"png": b"stale", "txt": b"stale"}) for key in sorted(keys))]
            write_samples(shard.tar, samples)
    server = downloaded["server"]
    server.image("/gone.png", GOOD_PNG)  # the 404 is back
    server.clear_requests()

    result = CliRunner().invoke(app, ["download", "--retry-failed", str(output), "--allow-private-network", "--timeout", str(TIMEOUT)])
    assert result.exit_code == 0, result.output
    report = read_json(str(output / "download_report.json"))

    failed_paths = {path for path, (status, _) in EXPECTED.items() if status != "success"}
    assert set(server.requests) == failed_paths
    assert Counter(server.requests) == Counter(failed_paths)
    after = {path_of(r["url"]): r for r in read_rows(output)}
    assert {p: r["key"] for p, r in after.items()} == {p: r["key"] for p, r in before.items()}
    assert after["/gone.png"]["status"] == "success"
    samples = read_tar_samples(output)  # raises on a duplicate key
    assert set(samples) == {r["key"] for r in after.values() if r["status"] == "success"}  # stale slow.png gone
    assert samples[after["/gone.png"]["key"]]["png"] == GOOD_PNG
    assert report["processed"] == len(failed_paths)
    assert report["kept"] == 4 and report["rows_in"] == len(EXPECTED) == report["kept"] + sum(report["dropped"].values())
    assert "http-404" not in report["dropped"]


@pytest.mark.slow
def test_cli_refuses_loopback_without_the_flag_and_keeps_the_rows(tmp_path):
    with ImageServer() as server:
        urls = [server.image("/good.png", GOOD_PNG), server.missing("/gone.png"), "file:///etc/passwd"]
        candidates = write_candidates(tmp_path / "candidates.parquet", urls)
        result = CliRunner().invoke(app, ["download", str(candidates), str(tmp_path / "out"), "--timeout", "1"])
        assert result.exit_code == 0, result.output
        assert server.requests == []  # nothing was contacted
    assert "refused-loopback" in result.output
    report = read_json(str(tmp_path / "out" / "download_report.json"))
    rows = read_rows(tmp_path / "out")
    assert [(r["url"], r["status"], r["error_reason"]) for r in rows] == [
        (urls[0], "refused", "refused-loopback"),
        (urls[1], "refused", "refused-loopback"),
        (urls[2], "refused", "refused-scheme"),
    ]
    assert report["dropped"] == {"refused-loopback": 2, "refused-scheme": 1}
    assert report["kept"] == 0 and report["rows_in"] == 3


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080/a.jpg", "refused-loopback"),
        ("http://localhost/a.jpg", "refused-loopback"),
        ("http://[::1]/a.jpg", "refused-loopback"),
        ("http://[::ffff:10.1.2.3]/a.jpg", "refused-private"),
        ("https://169.254.169.254/latest/meta-data", "refused-link-local"),
        ("http://10.0.0.7/a.jpg", "refused-private"),
        ("http://192.168.1.1/a.jpg", "refused-private"),
        ("http://0.0.0.0/a.jpg", "refused-private"),
        ("ftp://93.184.216.34/a.jpg", "refused-scheme"),
        ("file:///etc/passwd", "refused-scheme"),
        ("not a url", "refused-scheme"),
        ("http://93.184.216.34/a.jpg", None),
    ],
)
def test_address_policy(url, reason):
    assert AddressPolicy(allow_private_network=False).refusals([url]) == [reason]


def test_address_policy_opt_in_still_refuses_other_schemes():
    policy = AddressPolicy(allow_private_network=True)
    assert policy.refusals(["http://127.0.0.1/a.jpg", "file:///etc/passwd"]) == [None, "refused-scheme"]


def test_check_image_applies_laions_rules():
    options = DownloadOptions()
    assert len(SMALL_PNG) < MIN_IMAGE_BYTES
    assert check_image(SMALL_PNG, options).reason == "image-under-5kb"
    good = check_image(GOOD_JPEG, options)
    assert (good.reason, good.extension, good.width, good.height) == (None, "jpg", 96, 96)
    assert check_image(huge_png(), options).reason == "image-too-large"
    assert check_image(corrupt_image(), options).reason == "decode-error"
    bmp = io.BytesIO()
    Image.open(io.BytesIO(GOOD_PNG)).save(bmp, "BMP")  # uncompressed: 12 KB, a format the shards do not hold
    assert check_image(bmp.getvalue(), options).reason == "unsupported-format"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("HTTP Error 404: Not Found", "http-404"),
        ("HTTP Error 503: Service Unavailable", "http-503"),
        ("<urlopen error timed out>", "timeout"),
        ("Use of image disallowed by X-Robots-Tag directive", "x-robots-tag"),
        ("<urlopen error [Errno -2] Name or service not known>", "dns-error"),
        ("<urlopen error [Errno 111] Connection refused>", "connection-refused"),
        ("image area too large", "image-too-large"),
        ("something new", "download-error"),
    ],
)
def test_error_reason(message, reason):
    assert error_reason(message) == reason
