"""The download step: candidate (url, caption) pairs -> img2dataset shards, safely, every row accounted for.

The public entry point, :func:`download`: candidates are cut into shard
inputs (``OUTPUT/_work/input``, which fixes every row's key), then each shard
is one unit for a runner (:func:`laion_hf.download.shard.download_shard`):
judge its rows by their sites' robots.txt and tdmrep.json when the options
respect them (the consent step, :func:`laion_hf.download.consent.consent_shard`,
into ``OUTPUT/_work/consent``, in the same worker), then
fetch its URLs with a thread pool under the address policy and limits, apply
LAION's image rules to the original bytes in the same worker, and write
img2dataset's layout in key order with one ``status`` / ``error_reason`` per
row. Done markers make a run resumable per shard; ``download_report.json``
sums them. ``retry_failed=True`` fetches only the rows that did not succeed
and merges them into their shards under their key.

The concerns live in :mod:`laion_hf.download`: ``addresses`` (which hosts may
be contacted), ``fetch`` (one URL: pinned connections, redirects, deadline,
body cap), ``consent`` / ``sites`` / ``robots`` / ``tdmrep`` / ``agents`` (the
sites' opt-outs, judged per origin), ``optout`` (header opt-outs),
``politeness`` (per-host limits), ``images`` (LAION's checks), ``shard`` (one
shard's task and layout), ``candidates``, ``retry``, ``audit`` and ``report``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import fields, replace
from functools import partial
from typing import Any

import pyarrow.parquet as pq

from laion_hf.core.stage import StageStats
from laion_hf.download.candidates import open_candidates, write_inputs
from laion_hf.download.consent import SITE_CACHE
from laion_hf.download.options import DownloadError, DownloadOptions
from laion_hf.download.report import REPORT_FILE, DownloadReport, write_report
from laion_hf.download.retry import retry_shard
from laion_hf.download.shard import download_shard
from laion_hf.io.atomic import bookkeeping_path, filesystem, join, read_done, read_json, write_json
from laion_hf.io.shards import discover_shards
from laion_hf.runners.base import Runner, progress_bar
from laion_hf.runners.local import LocalRunner
from laion_hf.steps.registry import Context, Driver
from laion_hf.steps.specs import keyword_options

__all__ = ["REPORT_FILE", "DownloadError", "DownloadOptions", "DownloadReport", "download"]

_WORK = "_work"


def _remove(path: str) -> None:
    fs, inner = filesystem(path)
    if fs.exists(inner):
        fs.rm(inner, recursive=True)


def _download_fresh(candidates: str | Sequence[str], output_dir: str, options: DownloadOptions, runner: Runner) -> int:
    input_dir = join(output_dir, _WORK, "input")
    prepared_marker = join(output_dir, _WORK, "prepared.json")
    fs, marker_inner = filesystem(prepared_marker)
    if fs.exists(marker_inner):
        shard_count = read_json(prepared_marker)["shards"]
    else:
        try:
            shard_count = write_inputs(open_candidates(candidates), input_dir, options.rows_per_shard)
        except DownloadError:
            _remove(input_dir)  # a damaged file part-way: no half-prepared input stays behind
            raise
        if shard_count == 0:
            raise DownloadError(f"{candidates}: the candidate files hold no rows")
        write_json(prepared_marker, {"shards": shard_count})
    names = [f"{i:05d}" for i in range(shard_count)]
    consent_dir = join(output_dir, _WORK, "consent") if options.checks_hosts else None
    runner.map(names, partial(download_shard, input_dir=input_dir, output_dir=output_dir, options=options,
                              consent_dir=consent_dir),
               output_dir=output_dir, description="download shards")
    return sum(pq.ParquetFile(join(input_dir, f"{name}.parquet")).metadata.num_rows for name in names)


def _retry(output_dir: str, options: DownloadOptions, show_progress: bool) -> int:
    try:
        shards = discover_shards(output_dir)
    except FileNotFoundError as exc:
        raise DownloadError(f"{output_dir}: no downloaded shards to retry ({exc})") from exc
    unfinished = [s.name for s in shards if read_done(output_dir, s.name) is None]
    if unfinished:
        raise DownloadError(f"{output_dir}: shard(s) {', '.join(unfinished)} not finished; resume the download before retrying")
    processed = 0
    with progress_bar(disable=not show_progress) as progress:
        task = progress.add_task("retry failed rows", total=len(shards))
        for shard in shards:
            processed += retry_shard(shard, output_dir, options)
            progress.advance(task)
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
    runner: Runner | None = None,
    **options: Any,
) -> DownloadReport:
    """Download ``candidates`` (parquet files or directories with url, caption...) into ``output_dir``.

    Resumable: re-running the same call continues where a crash stopped. With
    ``retry_failed=True`` only rows whose status is not ``success`` in the
    existing shards are processed again and merged in under their key. Other
    keyword options are :class:`DownloadOptions` fields (``rows_per_shard``,
    ``deadline``, ``max_body_bytes``, ``allowed_networks``, ``resize_mode``...).
    Shards are ``runner``'s units (default: a local runner with ``processes`` workers).
    """
    started = time.perf_counter()
    settings = DownloadOptions(
        allow_private_network=allow_private_network, processes=processes, threads=threads, timeout=timeout, **options
    )
    if settings.site_cache_dir is None:  # the run's workers, and later retries, share the sites' answers
        settings = replace(settings, site_cache_dir=bookkeeping_path(output_dir, SITE_CACHE))
    if retry_failed:
        processed = _retry(output_dir, settings, show_progress)
    else:
        fs, report_inner = filesystem(join(output_dir, REPORT_FILE))
        if fs.exists(report_inner):  # a finished run: nothing to fetch
            return write_report(output_dir, processed=0, seconds=time.perf_counter() - started)
        runner = runner or LocalRunner(workers=processes, show_progress=show_progress)
        processed = _download_fresh(candidates, output_dir, settings, runner)
    _remove(join(output_dir, _WORK))
    return write_report(output_dir, processed=processed, seconds=time.perf_counter() - started)


def recipe_options() -> set[str]:
    """The options a recipe may set under ``steps.download``: :class:`DownloadOptions` fields and ``download``'s own."""
    taken = {"allow_private_network", "processes", "workers", "show_progress", "retry_failed", "runner"}
    return (keyword_options(download, taken) | {f.name for f in fields(DownloadOptions)}) - taken


def work(spec: dict[str, Any], context: Context) -> Driver:
    """The recipe's download step: every candidate shard a unit of the pipeline's runner."""

    def run(candidates: str, output_dir: str, runner: Runner) -> list[StageStats]:
        started = time.perf_counter()
        report = download(candidates, output_dir, runner=runner,
                          allow_private_network=context.options.get("allow_private_network", False), **spec)
        return [report.timed(time.perf_counter() - started)]

    return Driver(run)
