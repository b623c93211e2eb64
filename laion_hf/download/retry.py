"""Retry only the failures of a finished download, merging each shard in place under the same keys.

A shard's rows whose status is neither ``success`` nor ``opted-out`` are
fetched again (judged again by their sites' robots.txt and tdmrep.json first,
when the download respects them); the shard's
tar, parquet and stats are then rewritten (atomically, in key order) with the
other rows and samples exactly as they were. Tar samples of every retried key
are dropped before the new successes are added, so a merge interrupted
between its renames and run again never leaves a key twice.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laion_hf.core.schema import require_columns
from laion_hf.download.audit import read_opt_outs
from laion_hf.download.consent import ConsentChecker, consent_fetcher, mark_consent, site_cache_dir
from laion_hf.download.options import OPTED_OUT, SUCCESS, DownloadOptions
from laion_hf.download.shard import RESULT_SCHEMA, KeyOrderedTar, fetch_rows, fetcher_for, scratch_dir, write_shard
from laion_hf.io.atomic import mark_done
from laion_hf.io.shards import Shard
from laion_hf.io.tar import iter_members, sample_key


def retry_shard(shard: Shard, output_dir: str, options: DownloadOptions) -> int:
    """Fetch the failed rows of ``shard`` again and merge them in; returns how many rows were retried."""
    started = time.perf_counter()
    table = pq.read_table(shard.parquet)
    require_columns(table.column_names, ["url", "caption", "key", "status"], shard.parquet)
    failed = pc.fill_null(pc.invert(pc.is_in(table["status"], pa.array([SUCCESS, OPTED_OUT]))), True)
    retried = table.filter(failed)
    if retried.num_rows == 0:
        return 0
    retried_keys = set(retried["key"].to_pylist())
    candidates = retried.select([n for n in retried.column_names if n == "key" or n not in RESULT_SCHEMA.names])
    if options.checks_hosts:
        with consent_fetcher(options) as site_fetcher:
            candidates = mark_consent(candidates, ConsentChecker(options, site_fetcher, site_cache_dir(options, output_dir)))
    with fetcher_for(options) as fetcher, KeyOrderedTar(scratch_dir(output_dir)) as samples:
        if shard.tar is not None:
            for info, data in iter_members(shard.tar):
                if sample_key(info.name) not in retried_keys:
                    samples.copy(sample_key(info.name), info, data)
        results, opt_outs = fetch_rows(candidates, samples, options, fetcher)
        merged = pa.concat_tables([table.filter(pc.invert(failed)), results.select(table.column_names).cast(table.schema)])
        earlier = read_opt_outs(output_dir, shard.name)
        earlier = earlier.filter(pc.invert(pc.is_in(earlier["key"], pa.array(sorted(retried_keys), pa.string()))))
        stats = write_shard(output_dir, shard.name, merged, samples, started, pa.concat_tables([earlier, opt_outs]).sort_by("key"))
    mark_done(output_dir, shard.name, stats)
    return retried.num_rows
