"""One download shard: fetch its rows with a thread pool, check each image, write img2dataset's layout.

A shard's rows arrive with their key; fetches finish in any order, but the
output does not depend on it: image members go to an unnamed spool file as
they complete and the tar is written from it in key order at the end, and the
parquet holds every row (failed ones too, with ``status`` / ``error_reason``)
in key order. So two downloads of the same candidates give byte-identical
shards, and memory holds the shard's metadata plus the images in flight.

Fetches go through :func:`~laion_hf.download.politeness.polite_map` (per-host
concurrency, rate, ``Retry-After``, back-off). Rows the consent step marked
(``drop_reason``, :mod:`laion_hf.download.consent`) are not fetched; every
opted-out row, marked there or refused by its response's headers, is also
written with its evidence and time to ``OUTPUT/.laion-hf/opt-outs/NNNNN.parquet``
(hidden, so the shard's own files stay free of timings), the opt-out list
:func:`~laion_hf.download.audit.export_opt_outs` exports.

Layout (img2dataset's): ``NNNNN.tar`` with ``KEY.<jpg|png|webp>``, ``KEY.txt``
(caption) and ``KEY.json`` (the row) per successful sample; ``NNNNN.parquet``
with every row; ``NNNNN_stats.json`` (img2dataset's counters, plus ``refused``
and the reasons). All three are written under temporary names and renamed.
"""

from __future__ import annotations

import json
import math
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from io import BytesIO
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from laion_hf.core.stage import DROP_REASON, StageStats
from laion_hf.download.addresses import AddressPolicy
from laion_hf.download.audit import opt_out_record, opt_out_table, write_opt_outs
from laion_hf.download.consent import (
    CHECKED_AT,
    CONSENT_COLUMNS,
    EVIDENCE,
    OPTED_OUT_PREFIX,
    consent_shard,
    origin_of_url,
)
from laion_hf.download.fetch import Fetcher
from laion_hf.download.images import ImageProcessor
from laion_hf.download.options import (
    ERROR_REASON,
    FAILED_CHECKS,
    FAILED_TO_DOWNLOAD,
    OPTED_OUT,
    REFUSED,
    SUCCESS,
    DownloadOptions,
)
from laion_hf.download.optout import HeaderOptOut
from laion_hf.download.politeness import HOST_FAILING, HostSignal, polite_map
from laion_hf.io.atomic import atomic_path, filesystem, join, write_json
from laion_hf.io.tar import add_member

OOM_SHARD_COUNT = 5  # img2dataset's default: shard ids are 5 digits

#: The columns a download computes, after the candidate's own (img2dataset's, plus ``error_reason``).
RESULT_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("status", pa.string()),
    ("error_message", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("original_width", pa.int32()),
    ("original_height", pa.int32()),
    ("exif", pa.string()),
    ("sha256", pa.string()),
    (ERROR_REASON, pa.string()),
])
#: Never carried over from the candidates: a download computes these (img2dataset refuses them too).
COMPUTED_COLUMNS = frozenset({*RESULT_SCHEMA.names, "caption", "url", "md5", "sha512"})
#: Answers that say a host is struggling (counted toward its back-off), besides 5xx and 429.
HOST_FAILURES = frozenset({"timeout", "deadline", "connection-refused", "connection-reset", "tls-error", "download-error"})


def compute_key(index: int, shard_id: int, rows_per_shard: int) -> str:
    """img2dataset's key: the shard id, then the row's index within the shard, zero-padded."""
    index_digits = math.ceil(math.log10(rows_per_shard))
    return f"{10**index_digits * shard_id + index:0{index_digits + OOM_SHARD_COUNT}d}"


@dataclass
class Outcome:
    """What one row's download came to: its result columns, and the image when it succeeded."""

    status: str
    reason: str | None = None
    message: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)
    image: bytes | None = None
    extension: str | None = None
    retry_after: float | None = None  # a 429/503 asked to wait this long
    checked_at: float | None = None  # when an opt-out was seen (UNIX seconds), for the audit trail

    @property
    def signal(self) -> HostSignal:
        """What this outcome says about its host (see :mod:`laion_hf.download.politeness`)."""
        reason = self.reason or ""
        failed = reason in HOST_FAILURES or reason == "http-429" or reason.startswith("http-5")
        return HostSignal(failed=failed, retry_after=self.retry_after if reason in ("http-429", "http-503") else None)


def download_one(url: str, fetcher: Fetcher, process: ImageProcessor, retries: int = 0) -> Outcome:
    """Fetch ``url`` (again up to ``retries`` times after a failure) and check its image.

    Refusals and opt-outs are final; a 429 or 503 is left to the scheduler,
    which waits as the host asks before trying again.
    """
    for _ in range(retries + 1):
        fetched = fetcher.fetch(url)
        if fetched.data is not None or fetched.refused or fetched.opted_out or fetched.status in (429, 503):
            break
    if fetched.opted_out:
        return Outcome(OPTED_OUT, fetched.reason, fetched.message, checked_at=time.time())
    if fetched.data is None:
        status = REFUSED if fetched.refused else FAILED_TO_DOWNLOAD
        return Outcome(status, fetched.reason, fetched.message, retry_after=fetched.retry_after)
    processed = process(fetched.data)
    if processed.reason is not None:
        return Outcome(FAILED_CHECKS, processed.reason, processed.message, processed.columns)
    return Outcome(SUCCESS, columns=processed.columns, image=processed.image, extension=processed.extension)


def _host_failing(url: str | None) -> Outcome:
    return Outcome(FAILED_TO_DOWNLOAD, HOST_FAILING, "not fetched: its host failed too many times in a row")


def download_all(
    urls: Sequence[str | None], download: Callable[[str | None], Outcome], options: DownloadOptions
) -> Iterator[tuple[int, Outcome]]:
    """``(row index, outcome)`` as fetches complete, each host within the options' limits."""
    return polite_map(urls, download, host_of=origin_of_url, signal_of=lambda outcome: outcome.signal, give_up=_host_failing,
                      threads=options.threads, limits=options.host_limits)


class KeyOrderedTar:
    """Samples added in any order, written as one tar in key order (members byte for byte as added).

    Members are appended to an unnamed temporary tar (gone even after a kill);
    :meth:`write` copies each key's header and data span from it, so the
    output is the tar ``tarfile`` would write had the samples come sorted.
    """

    def __init__(self, scratch_dir: str | None) -> None:
        self._spool = tempfile.TemporaryFile(dir=scratch_dir)
        self._tar = tarfile.open(fileobj=self._spool, mode="w", format=tarfile.GNU_FORMAT)
        self._spans: dict[str, list[tuple[int, int]]] = {}

    def __enter__(self) -> KeyOrderedTar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._spool.close()

    def add(self, key: str, members: Iterable[tuple[str, bytes]]) -> None:
        start = self._tar.offset
        for name, data in members:
            add_member(self._tar, name, data)
        self._spans.setdefault(key, []).append((start, self._tar.offset))

    def copy(self, key: str, info: tarfile.TarInfo, data: bytes) -> None:
        """Add a member of an existing tar with its header fields as they were."""
        start = self._tar.offset
        self._tar.addfile(info, BytesIO(data))
        self._spans.setdefault(key, []).append((start, self._tar.offset))

    def write(self, path: str) -> None:
        with atomic_path(path) as tmp, fsspec.open(tmp, "wb") as out:
            for key in sorted(self._spans):
                for start, end in self._spans[key]:
                    self._spool.seek(start)
                    out.write(self._spool.read(end - start))
            written = out.tell() + 2 * tarfile.BLOCKSIZE  # end-of-archive marker, padded as tarfile pads it
            out.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE + (-written % tarfile.RECORDSIZE)))


def scratch_dir(output_dir: str) -> str | None:
    """Where spool files go: beside the output when it is local, else the system's temporary directory."""
    fs, inner = filesystem(output_dir)
    if not isinstance(fs, LocalFileSystem):
        return None
    fs.makedirs(inner, exist_ok=True)
    return inner


def result_row(row: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    """A candidate row with the download's columns filled in from ``outcome`` (consent columns consumed)."""
    row = {name: value for name, value in row.items() if name not in CONSENT_COLUMNS}
    return {
        **row,
        **dict.fromkeys(RESULT_SCHEMA.names),
        "key": row["key"],
        "status": outcome.status,
        "error_message": outcome.message,
        **outcome.columns,
        ERROR_REASON: outcome.reason,
    }


def sample_members(row: dict[str, Any], outcome: Outcome) -> list[tuple[str, bytes]]:
    """The tar members of a successful row: image, caption, the row as JSON (img2dataset's ``KEY.json``)."""
    key = row["key"]
    meta = json.dumps(row, ensure_ascii=False, default=str, indent=2).encode("utf-8")
    return [(f"{key}.{outcome.extension}", outcome.image), (f"{key}.txt", (row.get("caption") or "").encode("utf-8")),
            (f"{key}.json", meta)]


def opted_out_counts(statuses: Sequence[str], reasons: Sequence[str | None]) -> dict[str, int]:
    """Opted-out rows by reason (a subset of the failures: the report shows them apart)."""
    return dict(sorted(Counter(r for s, r in zip(statuses, reasons) if s == OPTED_OUT).items()))


def shard_stats(statuses: Sequence[str], reasons: Sequence[str | None]) -> StageStats:
    """Rows in, successes and failures by reason of one shard's rows."""
    failures = Counter(reason for status, reason in zip(statuses, reasons) if status != SUCCESS)
    stats = StageStats("download", rows_in=len(statuses), kept=statuses.count(SUCCESS), dropped=failures)
    stats.check()
    return stats


def write_shard(
    output_dir: str, name: str, table: pa.Table, samples: KeyOrderedTar, started: float, opt_outs: pa.Table
) -> dict[str, Any]:
    """Commit one shard (tar, parquet sorted by key, stats, its opt-out records); return its done marker's stats.

    The marker's ``seconds`` are the shard's wall time since ``started``; no
    timing enters the shard's own files.
    """
    table = table.sort_by("key")
    write_opt_outs(output_dir, name, opt_outs)
    samples.write(join(output_dir, f"{name}.tar"))
    with atomic_path(join(output_dir, f"{name}.parquet")) as tmp:
        pq.write_table(table, tmp)
    statuses = table["status"].to_pylist()
    reasons = table[ERROR_REASON].to_pylist()
    stats = shard_stats(statuses, reasons)
    stats.seconds = time.perf_counter() - started
    counts = Counter(statuses)
    write_json(
        join(output_dir, f"{name}_stats.json"),
        {
            "count": stats.rows_in,
            "successes": stats.kept,
            "failed_to_download": counts[FAILED_TO_DOWNLOAD],
            "failed_to_resize": counts[FAILED_CHECKS],
            "refused": counts[REFUSED],
            "opted_out": counts[OPTED_OUT],
            "status_dict": {SUCCESS: stats.kept, **stats.dropped},
        },
    )
    return {"shard": name, "stages": [stats.to_dict()], "opted_out": opted_out_counts(statuses, reasons)}


def output_schema(candidates: pa.Schema) -> pa.Schema:
    """The shard parquet's schema: the candidate's columns, then the ones a download computes."""
    kept = [f for f in candidates if f.name not in RESULT_SCHEMA.names and f.name not in CONSENT_COLUMNS]
    return pa.schema([*kept, *RESULT_SCHEMA])


def marked_outcome(reason: str, evidence: str | None, checked_at: str | None) -> Outcome:
    """The outcome of a row an earlier step marked: an opt-out (its prefix dropped), or a failure under its reason."""
    if reason.startswith(OPTED_OUT_PREFIX):
        return Outcome(OPTED_OUT, reason[len(OPTED_OUT_PREFIX):], evidence, columns={CHECKED_AT: checked_at})
    return Outcome(FAILED_TO_DOWNLOAD, reason, evidence or f"not fetched: {reason}", columns={CHECKED_AT: checked_at})


def fetch_rows(table: pa.Table, samples: KeyOrderedTar, options: DownloadOptions, fetcher: Fetcher) -> tuple[pa.Table, pa.Table]:
    """Download every unmarked row of ``table`` (candidate columns with ``key``).

    Returns the rows with results, and the opt-out records of the rows that
    opted out. Successful samples are added to ``samples`` as they complete.
    """
    process = ImageProcessor(options)
    rows = table.to_pylist()
    results: list[dict[str, Any] | None] = [None] * len(rows)
    opt_outs: list[dict[str, Any]] = []

    def record(index: int, outcome: Outcome) -> None:
        checked_at = outcome.columns.pop(CHECKED_AT, None)
        row = result_row(rows[index], outcome)
        if outcome.status == SUCCESS:
            samples.add(row["key"], sample_members(row, outcome))
        elif outcome.status == OPTED_OUT:
            opt_outs.append(opt_out_record(row, outcome, checked_at))
        results[index] = row

    to_fetch = []
    for index, row in enumerate(rows):
        if row.get(DROP_REASON) is not None:
            record(index, marked_outcome(row[DROP_REASON], row.get(EVIDENCE), row.get(CHECKED_AT)))
        else:
            to_fetch.append(index)
    download = partial(download_one, fetcher=fetcher, process=process, retries=options.retries)
    for position, outcome in download_all([rows[i]["url"] for i in to_fetch], download, options):
        record(to_fetch[position], outcome)
    missing = [rows[i]["key"] for i, result in enumerate(results) if result is None]
    if missing:  # a scheduling defect must never cost a row
        raise RuntimeError(f"no outcome for {len(missing)} row(s), first key {missing[0]}")
    return pa.Table.from_pylist(results, schema=output_schema(table.schema)), opt_out_table(opt_outs)


def fetcher_for(options: DownloadOptions) -> Fetcher:
    """The fetcher a worker uses: the address policy, limits, header opt-outs and user agent of ``options``."""
    directives = options.disallowed_header_directives if "x-robots-tag" in options.respect else ()
    return Fetcher(
        AddressPolicy(options.allow_private_network, options.allowed_networks),
        options.limits,
        HeaderOptOut(directives, options.tokens, tdm_reservation="tdmrep" in options.respect),
        options.user_agent,
    )


def download_shard(
    name: str, input_dir: str, output_dir: str, options: DownloadOptions, consent_dir: str | None = None
) -> dict[str, Any]:
    """Download the prepared input ``NNNNN.parquet`` into shard ``NNNNN``; return its stats (a runner's task).

    With ``consent_dir``, the consent step judges the input first, in the same
    worker, into ``consent_dir/NNNNN.parquet`` (one process pool for both steps);
    without, rows an earlier consent step marked are honoured as they are.
    """
    started = time.perf_counter()
    if consent_dir is not None:
        consent_shard(name, input_dir, consent_dir, options)
        input_dir = consent_dir
    table = pq.read_table(join(input_dir, f"{name}.parquet"))
    keys = [compute_key(index, int(name), options.rows_per_shard) for index in range(table.num_rows)]
    table = table.append_column("key", pa.array(keys, pa.string()))
    with fetcher_for(options) as fetcher, KeyOrderedTar(scratch_dir(output_dir)) as samples:
        results, opt_outs = fetch_rows(table, samples, options, fetcher)
        return write_shard(output_dir, name, results, samples, started, opt_outs)
