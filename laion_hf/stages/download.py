"""Download candidate (url, caption) pairs into img2dataset shards, safely and with every row accounted for.

img2dataset does the fetching, sharding, keys, X-Robots-Tag opt-outs and the
sidecar parquet; this module adds what it lacks:

1. **Address policy** (prepare step): every URL's host is resolved before any
   download; non-http(s) URLs and hosts resolving to loopback, private,
   link-local or reserved addresses are refused unless the user opts in.
   A refused row stays in its shard at its place (so it keeps its key) but is
   handed to img2dataset with an inert ``laion-hf-refused:`` URL, which urllib
   rejects without any network I/O; finalize restores the URL and marks it
   ``status = "refused"``.
2. **LAION's image rules on original bytes** (finalize step): by default
   nothing is re-encoded (``resize_mode="no"`` = img2dataset's
   ``disable_all_reencoding``), so finalize applies LAION's rules itself with
   Pillow: at least 5 KB of bytes, at most 89,478,484 pixels (read from the
   header, before any decode), decodable; it stores each image under its true
   extension, fills width/height and writes one ``error_reason`` per failed
   row. With a resize mode, img2dataset checks the pixel area itself and the
   byte rule cannot apply (only re-encoded bytes exist).
3. **Retry only the failures** (``retry_failed=True``): rows whose status is
   not ``success`` are processed again, keyed by their original key, and merged
   into their shard (tar + parquet rewritten atomically; no key twice).
4. **A success-rate summary** by reason: per-shard stats in the done markers
   and ``NNNNN_stats.json``, and ``download_report.json`` for the run.

Layout while running: ``OUTPUT/_work/input`` (one prepared parquet per shard),
``OUTPUT/_work/raw`` (img2dataset's output, resumable by its own stats files);
finalized shards land in ``OUTPUT`` with a done marker each, and ``_work`` is
removed when the run is complete.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import sys
import tarfile
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from io import BytesIO
from typing import Any
from urllib.parse import urlsplit

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from laion_hf.errors import UserError
from laion_hf.hashing import laion_hash_array
from laion_hf.io.atomic import atomic_path, filesystem, join, mark_done, read_done, read_json, write_json
from laion_hf.io.shards import Shard, discover_shards
from laion_hf.io.tar import add_member, iter_members, iter_samples, sample_key
from laion_hf.runners.local import run_shards
from laion_hf.schema import require_columns
from laion_hf.stages.base import StageStats

MIN_IMAGE_BYTES = 5 * 1024  # LAION dropped images under 5 KB
MAX_IMAGE_PIXELS = 89_478_484  # ... and over this many pixels (Pillow's decompression-bomb limit)
DISALLOWED_HEADER_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")

RESIZE_MODES = ("no", "keep_ratio", "center_crop", "border", "keep_ratio_largest")  # img2dataset's

SUCCESS = "success"
REFUSED = "refused"
FAILED_CHECKS = "failed_to_resize"  # img2dataset's status for a fetched image that fails its image checks
ERROR_REASON = "error_reason"
REPORT_FILE = "download_report.json"

#: Columns img2dataset computes itself and refuses in ``save_additional_columns``.
IMG2DATASET_COLUMNS = frozenset(
    {"key", "caption", "url", "width", "height", "original_width", "original_height",
     "status", "error_message", "exif", "md5", "sha256", "sha512"}
)
_REFUSAL = "laion_hf_refusal"  # carried through img2dataset, consumed by finalize
_REFUSED_URL = "laion_hf_refused_url"
_ORIGINAL_KEY = "laion_hf_key"  # set on retried rows: the key the row keeps
_INTERNAL = (_REFUSAL, _REFUSED_URL, _ORIGINAL_KEY)
_INERT_SCHEME = "laion-hf-refused"  # urllib knows no handler for it: a refused row never touches the network
_REFUSAL_MESSAGES = {
    "refused-scheme": "not fetched: only http and https URLs are downloaded",
    **{
        reason: f"not fetched: the host resolves to a {kind} address (--allow-private-network to fetch it)"
        for reason, kind in (("refused-loopback", "loopback"), ("refused-link-local", "link-local"),
                             ("refused-private", "private"), ("refused-reserved", "reserved"))
    },
}
_FORMAT_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}  # what read_sample_batches reads back
_WORK = "_work"


class DownloadError(UserError):
    """The download cannot start or did not finish (the message says what to do)."""


@dataclass(frozen=True)
class DownloadOptions:
    """Everything a download needs besides its inputs; picklable for worker processes."""

    allow_private_network: bool = False
    processes: int = 1
    threads: int = 16
    timeout: float = 10.0
    retries: int = 0
    rows_per_shard: int = 10_000
    resize_mode: str = "no"
    image_size: int = 256
    encode_format: str = "jpg"
    min_image_bytes: int = MIN_IMAGE_BYTES
    max_image_pixels: int = MAX_IMAGE_PIXELS
    min_image_side: int = 0
    disallowed_header_directives: tuple[str, ...] = DISALLOWED_HEADER_DIRECTIVES
    user_agent_token: str | None = None
    workers: int = 1  # processes for the finalize step

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise DownloadError(f"resize mode {self.resize_mode!r}: choose one of {', '.join(RESIZE_MODES)}")
        if self.encode_format not in ("jpg", "png", "webp"):
            raise DownloadError(f"encode format {self.encode_format!r}: choose jpg, png or webp")

    @property
    def keeps_original_bytes(self) -> bool:
        return self.resize_mode == "no"


@dataclass
class DownloadReport(StageStats):
    """Rows in = successes + failures by reason, over every shard of the output, plus where it is."""

    output_dir: str = ""
    shards: list[str] = field(default_factory=list)
    processed: int = 0  # rows this call handled: every candidate, or the retried failures

    @property
    def success_rate(self) -> float:
        return self.kept / self.rows_in if self.rows_in else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "success_rate": round(self.success_rate, 4),
            "output_dir": self.output_dir,
            "shards": self.shards,
            "processed": self.processed,
        }


# -- address policy -------------------------------------------------------------------------------


def _address_refusal(address: str) -> str | None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "refused-loopback"
    if ip.is_link_local:
        return "refused-link-local"
    if ip.is_private:
        return "refused-private"
    if ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return "refused-reserved"
    return None


class AddressPolicy:
    """Decides, per URL, whether it may be processed; resolves each host once (bounded cache)."""

    def __init__(self, allow_private_network: bool, cache_size: int = 100_000) -> None:
        self.allow_private_network = allow_private_network
        self._cache: dict[str, str | None] = {}
        self._cache_size = cache_size

    def host_refusal(self, host: str) -> str | None:
        """The refusal reason for ``host`` if ANY of its addresses is non-public (urllib may pick any)."""
        if host in self._cache:
            return self._cache[host]
        try:
            infos = socket.getaddrinfo(host, None)
        except (OSError, UnicodeError):
            verdict = None  # unresolvable: img2dataset's fetch fails and records the DNS error
        else:
            verdict = next(filter(None, (_address_refusal(info[4][0]) for info in infos)), None)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[host] = verdict
        return verdict

    def refusals(self, urls: Sequence[str | None]) -> list[str | None]:
        """One reason (or None = allowed) per URL; distinct hosts are resolved in parallel."""
        hosts: list[str | None] = []
        reasons: list[str | None] = []
        for url in urls:
            try:
                parts = urlsplit(url or "")
                host = parts.hostname
            except ValueError:
                parts, host = None, None
            if parts is None or parts.scheme.lower() not in ("http", "https") or not host:
                reasons.append("refused-scheme")  # file:, ftp:, data:... are never processed
                hosts.append(None)
            else:
                reasons.append(None)
                hosts.append(host)
        if self.allow_private_network:
            return reasons
        distinct = sorted({h for h in hosts if h is not None and h not in self._cache})
        with ThreadPoolExecutor(max_workers=32) as pool:
            for host, verdict in zip(distinct, pool.map(self.host_refusal, distinct)):
                self._cache[host] = verdict
        return [reason or (self.host_refusal(host) if host else None) for reason, host in zip(reasons, hosts)]


# -- prepare: candidates -> one img2dataset input file per shard ------------------------------------


def _candidate_files(candidates: str | Sequence[str]) -> list[str]:
    paths = [candidates] if isinstance(candidates, str) else list(candidates)
    files: list[str] = []
    for path in paths:
        fs, inner = filesystem(path)
        if fs.isdir(inner):
            found = sorted(p for p in fs.ls(inner, detail=False) if p.endswith(".parquet"))
            files.extend(fs.unstrip_protocol(p) if "://" in path else p for p in found)
        elif fs.exists(inner):
            files.append(path)
        else:
            raise DownloadError(f"{path}: no such candidate file or directory")
    if not files:
        raise DownloadError(f"{', '.join(paths)}: no candidate parquet files")
    return files


def _carried_columns(names: Sequence[str], url: str, caption: str) -> list[str]:
    """Candidate columns that travel through img2dataset unchanged (all but the ones it computes)."""
    return [n for n in names if n not in (url, caption) and n.lower() not in IMG2DATASET_COLUMNS]


def _policy_columns(urls: pa.ChunkedArray | pa.Array, policy: AddressPolicy) -> dict[str, Any]:
    """``url`` to fetch (inert for refused rows), the refusal reason, and the refused rows' real URL."""
    refusals = pa.array(policy.refusals(urls.to_pylist()), pa.string())
    refused = pc.is_valid(refusals)
    inert = pc.binary_join_element_wise(pa.scalar(_INERT_SCHEME + ":"), refusals, "")
    return {
        "url": pc.if_else(refused, inert, urls),
        _REFUSAL: refusals,
        _REFUSED_URL: pc.if_else(refused, urls, pa.scalar(None, pa.string())),
    }


def _prepare_batch(batch: pa.Table, columns: dict[str, str], carried: list[str], policy: AddressPolicy) -> pa.Table:
    urls = batch[columns["url"]].cast(pa.string())
    captions = batch[columns["caption"]].cast(pa.string())
    fetch = _policy_columns(urls, policy)
    out = {"url": fetch.pop("url"), "caption": captions, **{name: batch[name] for name in carried}}
    if not any(name.lower() == "hash" for name in carried):
        out["hash"] = laion_hash_array(urls, captions)
    return pa.table({**out, **fetch})


def _iter_candidate_batches(files: list[str], policy: AddressPolicy) -> Iterator[pa.Table]:
    schema_of_first: pa.Schema | None = None
    for path in files:
        with fsspec.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            names = parquet.schema_arrow.names
            columns = require_columns(names, ["url", "caption"], path)
            carried = _carried_columns(names, columns["url"], columns["caption"])
            for record_batch in parquet.iter_batches(batch_size=4096):
                prepared = _prepare_batch(pa.Table.from_batches([record_batch]), columns, carried, policy)
                if schema_of_first is None:
                    schema_of_first = prepared.schema
                elif prepared.schema.names != schema_of_first.names:
                    raise DownloadError(
                        f"{path}: columns {', '.join(names)} differ from the first candidate file's; "
                        "download candidate files with the same columns together"
                    )
                yield prepared.cast(schema_of_first)


def _write_inputs(batches: Iterator[pa.Table], input_dir: str, rows_per_shard: int) -> int:
    """Cut the prepared rows into shard-sized input files ``00000.parquet``...; returns the shard count."""
    pending: list[pa.Table] = []
    pending_rows = 0
    shard = 0

    def flush(table: pa.Table) -> None:
        nonlocal shard
        with atomic_path(join(input_dir, f"{shard:05d}.parquet")) as tmp:
            pq.write_table(table, tmp)
        shard += 1

    for batch in batches:
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= rows_per_shard:
            table = pa.concat_tables(pending)
            flush(table.slice(0, rows_per_shard))
            rest = table.slice(rows_per_shard)
            pending, pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
    if pending_rows:
        flush(pa.concat_tables(pending))
    return shard


# -- img2dataset ------------------------------------------------------------------------------------


def _run_img2dataset(input_dir: str, raw_dir: str, columns: list[str], options: DownloadOptions, rows_per_shard: int) -> None:
    # Imported here: img2dataset pulls in cv2 and albumentations, which the rest of laion-hf never needs.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no update check over the network in workers
    import img2dataset

    previous_sigint = signal.getsignal(signal.SIGINT)  # img2dataset installs one that exits with status 0
    try:
        with contextlib.redirect_stdout(sys.stderr):  # keep our stdout for the summary
            img2dataset.download(
                url_list=input_dir,
                input_format="parquet",
                url_col="url",
                caption_col="caption",
                save_additional_columns=columns,
                output_folder=raw_dir,
                output_format="webdataset",
                number_sample_per_shard=rows_per_shard,
                processes_count=options.processes,
                thread_count=options.threads,
                timeout=options.timeout,
                retries=options.retries,
                resize_mode=options.resize_mode,
                image_size=options.image_size,
                encode_format=options.encode_format,
                disable_all_reencoding=options.keeps_original_bytes,
                min_image_size=options.min_image_side,
                max_image_area=options.max_image_pixels,
                disallowed_header_directives=list(options.disallowed_header_directives),
                user_agent_token=options.user_agent_token,
                distributor="multiprocessing",
                enable_wandb=False,
                incremental_mode="incremental",
                compute_hash="sha256",
            )
    except SystemExit as exc:  # only img2dataset's SIGINT handler exits, with status 0: an interrupt is no success
        raise KeyboardInterrupt from exc
    finally:
        signal.signal(signal.SIGINT, previous_sigint)


# -- finalize: LAION's image rules, true extensions, refusals restored, one reason per failure --------


@dataclass(frozen=True)
class ImageCheck:
    """The verdict on one downloaded image: an extension and size, or a failure reason and message."""

    extension: str | None = None
    width: int | None = None
    height: int | None = None
    reason: str | None = None
    message: str | None = None


def check_image(data: bytes, options: DownloadOptions) -> ImageCheck:
    """Apply LAION's download rules to original image bytes (the header is read before any decode)."""
    if options.keeps_original_bytes and len(data) < options.min_image_bytes:
        return ImageCheck(reason="image-under-5kb", message=f"image is {len(data)} bytes, under {options.min_image_bytes}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(BytesIO(data)) as image:
                width, height = image.size
                if width * height > options.max_image_pixels:
                    return ImageCheck(
                        reason="image-too-large",
                        message=f"{width}x{height} = {width * height:,} pixels, over {options.max_image_pixels:,}",
                    )
                if min(width, height) < options.min_image_side:
                    return ImageCheck(reason="image-too-small", message=f"{width}x{height}, a side under {options.min_image_side}")
                extension = _FORMAT_EXTENSIONS.get(image.format or "")
                if extension is None:
                    return ImageCheck(reason="unsupported-format", message=f"{image.format} images are not kept")
                image.load()
        except Image.DecompressionBombError as exc:
            return ImageCheck(reason="image-too-large", message=str(exc))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            return ImageCheck(reason="decode-error", message=f"image does not decode: {exc}")
    return ImageCheck(extension=extension, width=width, height=height)


_ERROR_PATTERNS = (
    ("timed out", "timeout"),
    ("x-robots-tag", "x-robots-tag"),
    ("name or service not known", "dns-error"),
    ("nodename nor servname", "dns-error"),
    ("temporary failure in name resolution", "dns-error"),
    ("connection refused", "connection-refused"),
    ("connection reset", "connection-reset"),
    ("certificate", "tls-error"),
    ("image too small", "image-too-small"),
    ("image area too large", "image-too-large"),
    ("aspect ratio too large", "aspect-ratio-too-large"),
    ("image decoding error", "decode-error"),
    ("hash mismatch", "hash-mismatch"),
)


def error_reason(message: str | None) -> str:
    """A short, countable reason for one of img2dataset's error messages (the message itself is kept too)."""
    text = (message or "").lower()
    if text.startswith("http error "):
        return "http-" + text.removeprefix("http error ").split(":", 1)[0].strip()
    return next((reason for pattern, reason in _ERROR_PATTERNS if pattern in text), "download-error")


def _final_schema(raw: pa.Schema) -> pa.Schema:
    kept = [f for f in raw if f.name not in _INTERNAL]
    return pa.schema([*kept, pa.field(ERROR_REASON, pa.string())])


def _finalize_row(row: dict[str, Any], check: ImageCheck | None, options: DownloadOptions) -> dict[str, Any]:
    """The output row for one raw row, given the check of its image (None when it has no image)."""
    row = dict(row)
    refusal = row.pop(_REFUSAL, None)
    refused_url = row.pop(_REFUSED_URL, None)
    original_key = row.pop(_ORIGINAL_KEY, None)
    if original_key is not None:
        row["key"] = original_key
    row[ERROR_REASON] = None
    if refusal is not None:
        row.update(url=refused_url, status=REFUSED, error_reason=refusal, error_message=_REFUSAL_MESSAGES[refusal])
    elif row["status"] != SUCCESS:
        row[ERROR_REASON] = error_reason(row["error_message"])
    elif check is not None and check.reason is not None:
        row.update(status=FAILED_CHECKS, error_message=check.message, error_reason=check.reason)
    elif check is not None and options.keeps_original_bytes:
        row.update(width=check.width, height=check.height, original_width=check.width, original_height=check.height)
    return row


def _json_meta(row: dict[str, Any]) -> bytes:
    return json.dumps(row, ensure_ascii=False, default=str, indent=2).encode("utf-8")


def shard_stats(rows: Sequence[dict[str, Any]]) -> StageStats:
    """Rows in, successes and failures by reason of one shard's final rows."""
    failures = Counter(r[ERROR_REASON] for r in rows if r["status"] != SUCCESS)
    successes = sum(1 for r in rows if r["status"] == SUCCESS)
    stats = StageStats("download", rows_in=len(rows), kept=successes, dropped=failures)
    stats.check()
    return stats


def _write_stats_file(directory: str, name: str, rows: Sequence[dict[str, Any]], stats: StageStats) -> None:
    """``NNNNN_stats.json`` in img2dataset's vocabulary, plus refusals and reasons."""
    statuses = Counter(r["status"] for r in rows)
    write_json(
        join(directory, f"{name}_stats.json"),
        {
            "count": stats.rows_in,
            "successes": stats.kept,
            "failed_to_download": statuses["failed_to_download"],
            "failed_to_resize": statuses[FAILED_CHECKS],
            "refused": statuses[REFUSED],
            "status_dict": {SUCCESS: stats.kept, **stats.dropped},
        },
    )


def finalize_shard(name: str, raw_dir: str, output_dir: str, options: DownloadOptions) -> dict[str, Any]:
    """Turn one raw img2dataset shard into a final one (tar, sorted parquet, stats); return its stats.

    The raw tar is streamed sample by sample; memory holds the shard's metadata
    and one image.
    """
    raw = pq.read_table(join(raw_dir, f"{name}.parquet"))
    raw_rows = raw.to_pylist()
    index_of = {row["key"]: i for i, row in enumerate(raw_rows)}
    checks: dict[str, ImageCheck] = {}
    image_member = options.encode_format
    with atomic_path(join(output_dir, f"{name}.tar")) as tmp, fsspec.open(tmp, "wb") as out, tarfile.open(
        fileobj=out, mode="w", format=tarfile.GNU_FORMAT
    ) as tar:
        for raw_key, members in iter_samples(join(raw_dir, f"{name}.tar")):
            check = check_image(members[image_member], options)
            checks[raw_key] = check
            row = _finalize_row(raw_rows[index_of[raw_key]], check, options)
            if row["status"] != SUCCESS:
                continue
            key = row["key"]
            add_member(tar, f"{key}.{check.extension or image_member}", members[image_member])
            add_member(tar, f"{key}.txt", members.get("txt", b""))
            add_member(tar, f"{key}.json", _json_meta(row))
    rows = sorted((_finalize_row(r, checks.get(r["key"]), options) for r in raw_rows), key=lambda r: r["key"])
    with atomic_path(join(output_dir, f"{name}.parquet")) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=_final_schema(raw.schema)), tmp)
    stats = shard_stats(rows)
    _write_stats_file(output_dir, name, rows, stats)
    return {"shard": name, "stages": [stats.to_dict()]}


# -- retry only the failures -----------------------------------------------------------------------


def _merge_retried(shard: Shard, retried_dir: str, retried_name: str, output_dir: str) -> dict[str, Any]:
    """Replace a shard's retried rows by their new outcome; tar and parquet are rewritten atomically.

    Idempotent: tar samples of every retried key are dropped before the
    successful retries are appended, so a merge interrupted between the two
    renames and run again never leaves a key twice.
    """
    existing = pq.read_table(shard.parquet)
    retried = pq.read_table(join(retried_dir, f"{retried_name}.parquet"))
    retried_keys = set(retried["key"].to_pylist())
    unknown = retried_keys - set(existing["key"].to_pylist())
    if unknown:
        raise DownloadError(f"{shard.parquet}: retried keys {sorted(unknown)[:5]} are not in this shard")
    merged = pa.concat_tables(
        [existing.filter(pc.invert(pc.is_in(existing["key"], pa.array(sorted(retried_keys))))),
         retried.select(existing.column_names).cast(existing.schema)]
    ).sort_by("key")
    with atomic_path(shard.tar or join(output_dir, f"{shard.name}.tar")) as tmp, fsspec.open(tmp, "wb") as out, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        if shard.tar is not None:
            for info, data in iter_members(shard.tar):
                if sample_key(info.name) not in retried_keys:
                    tar.addfile(info, BytesIO(data))  # header and bytes as they were
        for info, data in iter_members(join(retried_dir, f"{retried_name}.tar")):
            tar.addfile(info, BytesIO(data))
    with atomic_path(shard.parquet) as tmp:
        pq.write_table(merged, tmp)
    rows = merged.select(["status", ERROR_REASON]).to_pylist()
    stats = shard_stats(rows)
    _write_stats_file(output_dir, shard.name, rows, stats)
    result = {"shard": shard.name, "stages": [stats.to_dict()]}
    mark_done(output_dir, shard.name, result)
    return result


def _write_retry_inputs(shards: list[Shard], input_dir: str, policy: AddressPolicy) -> tuple[dict[str, str], list[str], int]:
    """One input file per shard that has failures: the failed rows with their key; returns (input -> shard, columns, max rows)."""
    origin: dict[str, str] = {}
    carried: list[str] = []
    largest = 0
    for shard in shards:
        table = pq.read_table(shard.parquet)
        require_columns(table.column_names, ["url", "caption", "key", "status"], shard.parquet)
        failed = table.filter(pc.fill_null(pc.not_equal(table["status"], SUCCESS), True))
        if failed.num_rows == 0:
            continue
        names = [n for n in failed.column_names if n != ERROR_REASON]
        carried = _carried_columns(names, "url", "caption")
        fetch = _policy_columns(failed["url"], policy)
        prepared = pa.table({
            "url": fetch.pop("url"),
            "caption": failed["caption"],
            **{name: failed[name] for name in carried},
            **fetch,
            _ORIGINAL_KEY: failed["key"],
        })
        input_name = f"{len(origin):05d}"
        with atomic_path(join(input_dir, f"{input_name}.parquet")) as tmp:
            pq.write_table(prepared, tmp)
        origin[input_name] = shard.name
        largest = max(largest, failed.num_rows)
    return origin, carried, largest


# -- the entry point ---------------------------------------------------------------------------------


def _report(output_dir: str, processed: int, seconds: float) -> DownloadReport:
    shards = discover_shards(output_dir)
    report = DownloadReport("download", output_dir=output_dir, shards=[s.name for s in shards], processed=processed)
    for shard in shards:
        recorded = read_done(output_dir, shard.name)
        if recorded is None:
            raise DownloadError(f"{shard.parquet}: shard is not finished; re-run the download to resume")
        report.merge(StageStats.from_dict(recorded["stages"][0]))
    report.check()
    report.seconds = seconds  # wall clock of this call
    write_json(join(output_dir, REPORT_FILE), report.to_dict())
    return report


def _raw_shard_names(raw_dir: str) -> list[str]:
    fs, inner = filesystem(raw_dir)
    if not fs.exists(inner):
        return []
    return sorted(p.rsplit("/", 1)[-1][: -len(".parquet")] for p in fs.glob(inner + "/*.parquet"))


def _download_fresh(candidates: str | Sequence[str], output_dir: str, options: DownloadOptions, show_progress: bool) -> int:
    work = join(output_dir, _WORK)
    input_dir, raw_dir = join(work, "input"), join(work, "raw")
    prepared_marker = join(work, "prepared.json")
    fs, marker_inner = filesystem(prepared_marker)
    if fs.exists(marker_inner):
        prepared = read_json(prepared_marker)
    else:
        policy = AddressPolicy(options.allow_private_network)
        batches = _iter_candidate_batches(_candidate_files(candidates), policy)
        first = next(batches, None)
        if first is None:
            raise DownloadError(f"{candidates}: the candidate files hold no rows")
        columns = [n for n in first.column_names if n not in ("url", "caption")]
        shard_count = _write_inputs(_chain(first, batches), input_dir, options.rows_per_shard)
        prepared = {"columns": columns, "shards": shard_count}
        write_json(prepared_marker, prepared)
    unfinished = [f"{i:05d}" for i in range(prepared["shards"]) if read_done(output_dir, f"{i:05d}") is None]
    if unfinished:
        _run_img2dataset(input_dir, raw_dir, prepared["columns"], options, options.rows_per_shard)
        _finalize_all(unfinished, raw_dir, output_dir, options, show_progress)
    total = sum(pq.ParquetFile(join(input_dir, f"{i:05d}.parquet")).metadata.num_rows for i in range(prepared["shards"]))
    return total


def _chain(first: pa.Table, rest: Iterator[pa.Table]) -> Iterator[pa.Table]:
    yield first
    yield from rest


def _finalize_all(names: list[str], raw_dir: str, output_dir: str, options: DownloadOptions, show_progress: bool) -> None:
    missing = sorted(set(names) - set(_raw_shard_names(raw_dir)))
    if missing:
        raise DownloadError(
            f"{raw_dir}: img2dataset did not finish shard(s) {', '.join(missing)}; re-run the same command to resume"
        )
    run_shards(
        names,
        partial(finalize_shard, raw_dir=raw_dir, output_dir=output_dir, options=options),
        output_dir=output_dir,
        name_of=str,
        workers=options.workers,
        description="finalize shards",
        show_progress=show_progress,
    )


def _retry(output_dir: str, options: DownloadOptions, show_progress: bool) -> int:
    try:
        shards = discover_shards(output_dir)
    except FileNotFoundError as exc:
        raise DownloadError(f"{output_dir}: no downloaded shards to retry ({exc})") from exc
    work = join(output_dir, _WORK, "retry")
    fs, inner = filesystem(work)
    if fs.exists(inner):
        fs.rm(inner, recursive=True)  # a retry always starts from the shards' current state
    input_dir, raw_dir, final_dir = join(work, "input"), join(work, "raw"), join(work, "final")
    origin, carried, largest = _write_retry_inputs(shards, input_dir, AddressPolicy(options.allow_private_network))
    if not origin:
        return 0
    _run_img2dataset(input_dir, raw_dir, [*carried, *_INTERNAL], options, largest)
    _finalize_all(sorted(origin), raw_dir, final_dir, options, show_progress)
    by_name = {s.name: s for s in shards}
    processed = 0
    for retried_name, shard_name in sorted(origin.items()):
        processed += pq.ParquetFile(join(input_dir, f"{retried_name}.parquet")).metadata.num_rows
        _merge_retried(by_name[shard_name], final_dir, retried_name, output_dir)
    return processed


def download(
    candidates: str | Sequence[str],
    output_dir: str,
    *,
    allow_private_network: bool = False,
    retry_failed: bool = False,
    processes: int = 1,
    threads: int = 16,
    timeout: float = 10.0,
    show_progress: bool = True,
    **options: Any,
) -> DownloadReport:
    """Download ``candidates`` (parquet files or directories with url, caption...) into ``output_dir``.

    Resumable: re-running the same call continues where a crash stopped. With
    ``retry_failed=True`` only rows whose status is not ``success`` in the
    existing shards are processed again and merged in under their key. Other
    keyword options are :class:`DownloadOptions` fields (``rows_per_shard``,
    ``resize_mode``, ``retries``, ``min_image_bytes``...).
    """
    started = time.perf_counter()
    settings = DownloadOptions(
        allow_private_network=allow_private_network, processes=processes, threads=threads, timeout=timeout, **options
    )
    if retry_failed:
        processed = _retry(output_dir, settings, show_progress)
    else:
        fs, report_inner = filesystem(join(output_dir, REPORT_FILE))
        if fs.exists(report_inner):  # a finished run: nothing to fetch
            return _report(output_dir, processed=0, seconds=time.perf_counter() - started)
        processed = _download_fresh(candidates, output_dir, settings, show_progress)
    fs, work_inner = filesystem(join(output_dir, _WORK))
    if fs.exists(work_inner):
        fs.rm(work_inner, recursive=True)
    return _report(output_dir, processed=processed, seconds=time.perf_counter() - started)

