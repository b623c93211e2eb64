"""download end to end against the loopback image server: statuses, reasons, layout, retries, refusals, bad input."""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from laion_hf.cli import app
from laion_hf.core.hashing import laion_hash
from laion_hf.download.images import check_image
from laion_hf.download.options import MIN_IMAGE_BYTES, DownloadError, DownloadOptions
from laion_hf.download.shard import compute_key
from laion_hf.io.atomic import read_json
from laion_hf.io.shards import discover_shards
from laion_hf.io.tar import iter_samples, write_samples
from laion_hf.steps.download import download
from laion_hf.testing.image_server import ImageServer, corrupt_image, huge_png
from tests.download.images import noise_image

TIMEOUT = 3  # seconds: generous for good images on a loaded 2-core machine; the slow route waits 4x longer
DEADLINE = 2 * TIMEOUT  # the dripping route would take two minutes
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
    "/noai.png": ("opted-out", "x-robots-tag:noai"),
    "/noimageai.png": ("opted-out", "x-robots-tag:noimageai"),
    "/drip.png": ("failed_to_download", "deadline"),
    "/terabyte.jpg": ("failed_to_download", "body-too-large"),
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
    server.drip("/drip.png", GOOD_PNG, interval=0.01, give_up_after=60)
    server.declares("/terabyte.jpg")
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
                          deadline=DEADLINE, rows_per_shard=4, show_progress=False)
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
    assert written["success_rate"] == pytest.approx(3 / len(EXPECTED), abs=1e-4)
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
                     timeout=TIMEOUT, deadline=DEADLINE, rows_per_shard=4, show_progress=False)
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

    result = CliRunner().invoke(app, ["download", "--retry-failed", str(output), "--allow-private-network",
                                      "--timeout", str(TIMEOUT), "--deadline", str(DEADLINE)])
    assert result.exit_code == 0, result.output
    report = read_json(str(output / "download_report.json"))

    # opted-out rows are not asked for again, nor are the sites' robots.txt and tdmrep.json (cached for the run)
    failed_paths = {path for path, (status, _) in EXPECTED.items() if status not in ("success", "opted-out")}
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


@pytest.mark.slow
def test_a_redirect_to_a_refused_host_keeps_its_row_refused_and_is_never_contacted(tmp_path):
    with ImageServer() as public, ImageServer(host="127.0.0.2") as private:
        private.image("/secret.png", GOOD_PNG)
        urls = [public.image("/good.png", GOOD_PNG), public.redirect("/moved.png", private.url("/secret.png"))]
        candidates = write_candidates(tmp_path / "candidates.parquet", urls)
        report = download(str(candidates), str(tmp_path / "out"), allowed_networks=("127.0.0.1/32",),
                          timeout=TIMEOUT, show_progress=False)
        assert private.requests == []
        images = [path for path in public.requests if path not in ("/robots.txt", "/.well-known/tdmrep.json")]
        assert sorted(images) == ["/good.png", "/moved.png"]
    rows = read_rows(tmp_path / "out")
    assert [(r["url"], r["status"], r["error_reason"]) for r in rows] == [
        (urls[0], "success", None),
        (urls[1], "refused", "refused-loopback"),
    ]
    assert rows[1]["error_message"] == (f"redirect to {private.url('/secret.png')} not followed: the host resolves "
                                        "to a loopback address (--allow-private-network to fetch it)")
    assert report.dropped == {"refused-loopback": 1} and report.kept == 1


@pytest.mark.slow
def test_spellings_of_a_loopback_host_are_refused_without_a_connection(tmp_path):
    with ImageServer() as server:
        server.image("/a.png", GOOD_PNG)
        spellings = ["%31%32%37.0.0.1", "127%2e0%2e0%2e1", "0x7f.1", "2130706433", "[::ffff:127.0.0.1]", "localhost"]
        urls = [server.url("/a.png", host=host) for host in spellings]
        candidates = write_candidates(tmp_path / "candidates.parquet", urls)
        report = download(str(candidates), str(tmp_path / "out"), timeout=TIMEOUT, show_progress=False)
        assert server.requests == []
    rows = read_rows(tmp_path / "out")
    assert [(r["url"], r["status"], r["error_reason"]) for r in rows] == [(u, "refused", "refused-loopback") for u in urls]
    assert report.dropped == {"refused-loopback": len(urls)}


def shard_files(output: Path) -> dict[str, bytes]:
    """Every file of a download's shards (tar, parquet, stats) by name; done markers and the report hold timings."""
    return {p.name: p.read_bytes() for p in sorted(output.iterdir()) if p.suffix in (".tar", ".parquet") or p.name.endswith("_stats.json")}


@pytest.mark.slow
def test_two_downloads_of_the_same_candidates_are_byte_identical(tmp_path):
    """Completion order differs between the runs (the delays are reversed); the shards do not."""
    images = [noise_image(10 + i) for i in range(12)]
    outputs = []
    with ImageServer() as server:
        for run, order in enumerate((range(12), reversed(range(12)))):
            for rank, i in enumerate(order):
                server.slow(f"/{i}.png", images[i], delay=0.05 * rank)
            server.corrupt("/corrupt.jpg")
            server.image("/small.png", SMALL_PNG)
            urls = [server.url(f"/{i}.png") for i in range(12)] + [server.url(p) for p in ("/corrupt.jpg", "/small.png", "/gone.png")]
            candidates = write_candidates(tmp_path / f"candidates-{run}.parquet", urls)
            outputs.append(tmp_path / f"out-{run}")
            download(str(candidates), str(outputs[-1]), allow_private_network=True, timeout=TIMEOUT, threads=8,
                     rows_per_shard=5, show_progress=False)
    first, second = (shard_files(o) for o in outputs)
    assert len(first) == 9 and sorted(first) == sorted(second) and first == second  # 3 shards x 3 files
    for shard in discover_shards(str(outputs[0])):
        with tarfile.open(shard.tar) as tar:
            keys = [name.split(".")[0] for name in tar.getnames()]
        assert keys == sorted(keys)
    messages = [r["error_message"] for r in read_rows(outputs[0]) if r["error_message"]]
    assert messages == ["image does not decode: not a known image format", "image is 268 bytes, under 5120",
                        "HTTP Error 404: Not Found"]


def format_samples() -> dict[str, tuple[bytes, str | None]]:
    """Real formats as they occur on the web: path -> (bytes, the tar extension, or None if refused)."""
    rng = random.Random(7)
    pixels = bytes(rng.randrange(256) for _ in range(96 * 96 * 4))
    rgba = Image.frombytes("RGBA", (96, 96), pixels)
    out: dict[str, tuple[bytes, str | None]] = {}

    def save(path: str, image: Image.Image, fmt: str, extension: str | None, **kwargs) -> None:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **kwargs)
        out[path] = (buffer.getvalue(), extension)

    save("/alpha.png", rgba, "PNG", "png")
    save("/cmyk.jpg", rgba.convert("CMYK"), "JPEG", "jpg", quality=95)
    save("/photo.webp", rgba.convert("RGB"), "WEBP", "webp", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    save("/rotated.jpg", rgba.convert("RGB").crop((0, 0, 96, 64)), "JPEG", "jpg", quality=95, exif=exif)
    save("/anim.gif", rgba.convert("P"), "GIF", None)
    return out


@pytest.mark.slow
def test_real_formats_keep_their_original_bytes_and_true_extension(tmp_path):
    formats = format_samples()
    with ImageServer() as server:
        urls = [server.image(path, data) for path, (data, _) in formats.items()]
        candidates = write_candidates(tmp_path / "candidates.parquet", urls)
        download(str(candidates), str(tmp_path / "out"), allow_private_network=True, timeout=TIMEOUT, show_progress=False)
    rows = {path_of(r["url"]): r for r in read_rows(tmp_path / "out")}
    samples = read_tar_samples(tmp_path / "out")
    for path, (data, extension) in formats.items():
        row = rows[path]
        if extension is None:
            assert (row["status"], row["error_reason"], row["error_message"]) == (
                "failed_to_resize", "unsupported-format", "GIF images are not kept")
            continue
        assert samples[row["key"]][extension] == data
        assert (row["width"], row["height"]) == Image.open(io.BytesIO(data)).size  # as stored, not as displayed
    assert "Image Orientation" in rows["/rotated.jpg"]["exif"]
    assert rows["/alpha.png"]["exif"] == "{}"


def write_bad_candidates(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.parquet"
    n = 5000
    table = pa.table({"url": [f"http://example.org/{i}.jpg" for i in range(n)], "caption": [f"c {i}" for i in range(n)]})
    if kind == "int-url":
        table = table.set_column(0, "url", pa.array(range(n), pa.int64()))
    pq.write_table(table, path)
    data = bytearray(path.read_bytes())
    if kind == "truncated":
        data = data[: len(data) // 2]
    elif kind == "damaged-page":
        for i in range(200, 600):
            data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("truncated", "not a readable parquet file (Parquet magic bytes not found"),
        ("damaged-page", "unreadable candidate rows (Corrupt snappy compressed data"),
        ("int-url", "column url holds int64, not text; urls must be strings"),
    ],
)
def test_bad_candidates_are_a_clear_error_naming_the_file(tmp_path, kind, message):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"url": [f"http://example.org/{i}.jpg" for i in range(7)], "caption": ["a"] * 7}), good)
    bad = write_bad_candidates(tmp_path, kind)
    out = tmp_path / "out"
    with pytest.raises(DownloadError) as raised:
        download([str(good), str(bad)], str(out), rows_per_shard=3, show_progress=False)  # good's rows fill 2 shards
    assert str(raised.value).startswith(f"{bad}: {message}")
    assert [p for p in out.rglob("*") if p.is_file()] == []


@pytest.mark.slow
def test_cli_bad_candidates_exit_2_with_the_file_named_and_no_traceback(tmp_path):
    bad = write_bad_candidates(tmp_path, "truncated")
    wrong_type = write_bad_candidates(tmp_path, "int-url")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])}
    for path in (bad, wrong_type):
        result = subprocess.run([sys.executable, "-c", "from laion_hf.cli import main; main()", "download", str(path),
                                 str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 2, result.stderr
        assert str(path) in " ".join(result.stderr.split())  # rich may wrap a long line
        assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.parquet"))


@pytest.mark.parametrize(
    ("index", "shard", "rows_per_shard", "key"),
    [(7, 3, 10_000, "000030007"), (0, 0, 10_000, "000000000"), (2, 1, 4, "000012"), (63, 2, 64, "0000263")],
)
def test_keys_are_img2datasets(index, shard, rows_per_shard, key):
    assert compute_key(index, shard, rows_per_shard) == key


@pytest.mark.slow
def test_a_resize_mode_checks_the_original_bytes_then_stores_img2datasets_resized_image(tmp_path):
    with ImageServer() as server:
        urls = [server.image("/good.png", GOOD_PNG), server.image("/small.png", SMALL_PNG)]
        candidates = write_candidates(tmp_path / "candidates.parquet", urls)
        download(str(candidates), str(tmp_path / "out"), allow_private_network=True, timeout=TIMEOUT,
                 resize_mode="keep_ratio", image_size=32, show_progress=False)
    good, small = read_rows(tmp_path / "out")
    assert (small["status"], small["error_reason"]) == ("failed_to_resize", "image-under-5kb")  # the original's size
    assert (good["width"], good["height"], good["original_width"], good["original_height"]) == (32, 32, 64, 64)
    stored = read_tar_samples(tmp_path / "out")[good["key"]]["jpg"]
    assert Image.open(io.BytesIO(stored)).size == (32, 32)
    assert good["sha256"] == hashlib.sha256(GOOD_PNG).hexdigest()  # of the original bytes
