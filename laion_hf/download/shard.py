"""One download shard: fetch its rows with a thread pool, check each image, write img2dataset's layout.

A shard's rows arrive with their key; fetches finish in any order, but the
output does not depend on it: image members go to an unnamed spool file as
they complete and the tar is written from it in key order at the end, and the
parquet holds every row (failed ones too, with ``status`` / ``error_reason``)
in key order. So two downloads of the same candidates give byte-identical
shards, and memory holds the shard's metadata plus the images in flight.

Layout (img2dataset's): ``NNNNN.tar`` with ``KEY.<jpg|png|webp>``, ``KEY.txt``
(caption) and ``KEY.json`` (the row) per successful sample; ``NNNNN.parquet``
with every row; ``NNNNN_stats.json`` (img2dataset's counters, plus ``refused``
and the reasons). All three are written under temporary names and renamed.
"""

from __future__ import annotations

import itertools
import json
import math
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from io import BytesIO
from queue import SimpleQueue
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from laion_hf.core.stage import StageStats
from laion_hf.download.addresses import AddressPolicy
from laion_hf.download.fetch import USER_AGENT, Fetcher
from laion_hf.download.images import ImageProcessor
from laion_hf.download.options import ERROR_REASON, FAILED_CHECKS, FAILED_TO_DOWNLOAD, REFUSED, SUCCESS, DownloadOptions
from laion_hf.download.optout import HeaderOptOut
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


def download_one(url: str, fetcher: Fetcher, process: ImageProcessor, retries: int = 0) -> Outcome:
    """Fetch ``url`` (again up to ``retries`` times after a network failure) and check its image."""
    for _ in range(retries + 1):
        fetched = fetcher.fetch(url)
        if fetched.data is not None or fetched.refused or fetched.reason == "x-robots-tag":
            break
    if fetched.data is None:
        return Outcome(REFUSED if fetched.refused else FAILED_TO_DOWNLOAD, fetched.reason, fetched.message)
    processed = process(fetched.data)
    if processed.reason is not None:
        return Outcome(FAILED_CHECKS, processed.reason, processed.message, processed.columns)
    return Outcome(SUCCESS, columns=processed.columns, image=processed.image, extension=processed.extension)


def download_all(
    urls: Sequence[str | None], download: Callable[[str | None], Outcome], threads: int
) -> Iterator[tuple[int, Outcome]]:
    """``(row index, outcome)`` as fetches complete; at most ``2 x threads`` outcomes wait in memory."""
    finished: SimpleQueue[tuple[int, Future[Outcome]]] = SimpleQueue()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="download") as pool:

        def submit(index: int, url: str | None) -> None:
            pool.submit(download, url).add_done_callback(lambda future: finished.put((index, future)))

        rows = enumerate(urls)
        in_flight = 0
        for index, url in itertools.islice(rows, 2 * threads):
            submit(index, url)
            in_flight += 1
        while in_flight:
            index, future = finished.get()
            in_flight -= 1
            for next_index, next_url in itertools.islice(rows, 1):
                submit(next_index, next_url)
                in_flight += 1
            yield index, future.result()


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
    """A candidate row with the download's columns filled in from ``outcome``."""
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


def shard_stats(statuses: Sequence[str], reasons: Sequence[str | None]) -> StageStats:
    """Rows in, successes and failures by reason of one shard's rows."""
    failures = Counter(reason for status, reason in zip(statuses, reasons) if status != SUCCESS)
    stats = StageStats("download", rows_in=len(statuses), kept=statuses.count(SUCCESS), dropped=failures)
    stats.check()
    return stats


def write_shard(output_dir: str, name: str, table: pa.Table, samples: KeyOrderedTar, started: float) -> dict[str, Any]:
    """Commit one shard (tar, parquet sorted by key, stats); return the stats its done marker records.

    The marker's ``seconds`` are the shard's wall time since ``started``; no
    timing enters the shard's own files.
    """
    table = table.sort_by("key")
    samples.write(join(output_dir, f"{name}.tar"))
    with atomic_path(join(output_dir, f"{name}.parquet")) as tmp:
        pq.write_table(table, tmp)
    statuses = table["status"].to_pylist()
    stats = shard_stats(statuses, table[ERROR_REASON].to_pylist())
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
            "status_dict": {SUCCESS: stats.kept, **stats.dropped},
        },
    )
    return {"shard": name, "stages": [stats.to_dict()]}


def output_schema(candidates: pa.Schema) -> pa.Schema:
    """The shard parquet's schema: the candidate's columns, then the ones a download computes."""
    kept = [f for f in candidates if f.name not in RESULT_SCHEMA.names]
    return pa.schema([*kept, *RESULT_SCHEMA])


def fetch_rows(table: pa.Table, samples: KeyOrderedTar, options: DownloadOptions, fetcher: Fetcher) -> pa.Table:
    """Download every row of ``table`` (candidate columns with ``key``); returns the rows with results.

    Successful samples are added to ``samples`` as they complete.
    """
    process = ImageProcessor(options)
    rows = table.to_pylist()
    results: list[dict[str, Any] | None] = [None] * len(rows)
    download = partial(download_one, fetcher=fetcher, process=process, retries=options.retries)
    for index, outcome in download_all(table["url"].to_pylist(), download, options.threads):
        row = result_row(rows[index], outcome)
        if outcome.status == SUCCESS:
            samples.add(row["key"], sample_members(row, outcome))
        results[index] = row
    return pa.Table.from_pylist(results, schema=output_schema(table.schema))


def fetcher_for(options: DownloadOptions) -> Fetcher:
    """The fetcher a worker uses: the address policy, limits, opt-outs and user agent of ``options``."""
    user_agent = USER_AGENT
    if options.user_agent_token:
        user_agent += f" (compatible; {options.user_agent_token}; +https://github.com/rom1504/img2dataset)"
    return Fetcher(
        AddressPolicy(options.allow_private_network, options.allowed_networks),
        options.limits,
        HeaderOptOut(options.disallowed_header_directives, options.user_agent_token),
        user_agent,
    )


def download_shard(name: str, input_dir: str, output_dir: str, options: DownloadOptions) -> dict[str, Any]:
    """Download the prepared input ``NNNNN.parquet`` into shard ``NNNNN``; return its stats (a runner's task)."""
    started = time.perf_counter()
    table = pq.read_table(join(input_dir, f"{name}.parquet"))
    keys = [compute_key(index, int(name), options.rows_per_shard) for index in range(table.num_rows)]
    table = table.append_column("key", pa.array(keys, pa.string()))
    with fetcher_for(options) as fetcher, KeyOrderedTar(scratch_dir(output_dir)) as samples:
        return write_shard(output_dir, name, fetch_rows(table, samples, options, fetcher), samples, started)
