"""The opt-out audit trail: every row a site opted out of, with the evidence and when it was seen.

Each download shard writes its opted-out rows to the hidden
``OUTPUT/.laion-hf/opt-outs/NNNNN.parquet`` (key, url, url_md5, host, reason,
evidence, checked_at) beside its commit; :func:`export_opt_outs` gathers them
into one CSV or parquet file. That file is a removal list as it is: its
``url_md5`` column is what the ``url-md5`` kind reads, so
``laion-hf clean --remove url-md5=opt-outs.csv`` (or a recipe's removal list)
removes the opted-out URLs from a copy made without these checks.
"""

from __future__ import annotations

import csv
import hashlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.download.addresses import Refusal, parse_url
from laion_hf.io.atomic import atomic_path, bookkeeping_path, filesystem
from laion_hf.io.shards import discover_shards

OPT_OUTS = "opt-outs"
OPT_OUT_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("url", pa.string()),
    ("url_md5", pa.string()),
    ("host", pa.string()),
    ("reason", pa.string()),
    ("evidence", pa.string()),
    ("checked_at", pa.string()),  # ISO 8601, UTC
])


def iso_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def opt_out_record(row: dict[str, Any], outcome: Any, checked_at: str | None) -> dict[str, Any]:
    """The audit record of an opted-out result row (``outcome.checked_at``: when a header said so)."""
    url = row.get("url")
    try:
        host = parse_url(url)[1]
    except Refusal:
        host = None
    when = iso_time(outcome.checked_at) if outcome.checked_at is not None else checked_at
    return {
        "key": row["key"],
        "url": url,
        "url_md5": hashlib.md5((url or "").encode("utf-8")).hexdigest(),
        "host": host,
        "reason": row["error_reason"],
        "evidence": row["error_message"],
        "checked_at": when or iso_time(time.time()),
    }


def opt_out_table(records: Sequence[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(records), schema=OPT_OUT_SCHEMA).sort_by("key")


def opt_outs_path(output_dir: str, shard: str) -> str:
    return bookkeeping_path(output_dir, OPT_OUTS, f"{shard}.parquet")


def write_opt_outs(output_dir: str, shard: str, table: pa.Table) -> None:
    with atomic_path(opt_outs_path(output_dir, shard)) as tmp:
        pq.write_table(table, tmp)


def read_opt_outs(output_dir: str, shard: str) -> pa.Table:
    """A shard's opt-out records (none for a shard downloaded before the audit trail existed)."""
    path = opt_outs_path(output_dir, shard)
    fs, inner = filesystem(path)
    return pq.read_table(path).cast(OPT_OUT_SCHEMA) if fs.exists(inner) else OPT_OUT_SCHEMA.empty_table()


def export_opt_outs(output_dir: str, path: str) -> int:
    """Write every opt-out record of the download in ``output_dir`` to ``path`` (``.csv`` or ``.parquet``); rows written."""
    tables = [read_opt_outs(output_dir, shard.name) for shard in discover_shards(output_dir)]
    table = pa.concat_tables([OPT_OUT_SCHEMA.empty_table(), *tables])
    with atomic_path(path) as tmp:
        if path.lower().endswith(".parquet"):
            pq.write_table(table, tmp)
        else:
            with fsspec.open(tmp, "w", encoding="utf-8", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(OPT_OUT_SCHEMA.names)
                writer.writerows(zip(*(table[name].to_pylist() for name in OPT_OUT_SCHEMA.names)))
    return table.num_rows
