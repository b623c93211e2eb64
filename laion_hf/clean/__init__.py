"""``laion-hf clean``: turn an existing LAION copy into Re-LAION research / research-safe.

Modules: :mod:`lists` (removal lists), :mod:`removal` (the :class:`RemovalStage`
that marks rows), :mod:`options` (loading sources into a stage), :mod:`shard`
(one shard's parquet + tar), :mod:`report` (counts and invariant),
:mod:`verify` (re-reading the output). :func:`clean_copy` ties them to the
local runner: shards in parallel, resumable through done markers.
"""

from __future__ import annotations

import os
from functools import partial

from laion_hf.clean.lists import KINDS, RemovalSets, load_removal_sets, parse_spec
from laion_hf.clean.options import CleanOptions, build_stage
from laion_hf.clean.removal import VARIANT_THRESHOLDS, RemovalStage
from laion_hf.clean.report import REPORT_NAME, CleanReport
from laion_hf.clean.files import open_parquet
from laion_hf.clean.shard import check_shard_columns, clean_shard
from laion_hf.clean.verify import Violation, verify_clean, verify_copy
from laion_hf.errors import UserError
from laion_hf.io.atomic import adopt_legacy, bookkeeping_path, filesystem, join, read_json, write_json
from laion_hf.io.shards import Shard, discover_shards
from laion_hf.runners.local import run_shards

OPTIONS_NAME = "clean_options.json"

__all__ = [
    "KINDS",
    "REPORT_NAME",
    "VARIANT_THRESHOLDS",
    "CleanOptions",
    "CleanReport",
    "RemovalSets",
    "RemovalStage",
    "Violation",
    "clean_copy",
    "load_removal_sets",
    "parse_spec",
    "verify_clean",
    "verify_copy",
]


def _shard_name(shard: Shard) -> str:
    return shard.name


def _claim_output(output_dir: str, options: CleanOptions) -> None:
    """Record the options in OUTPUT's bookkeeping; refuse to resume a run that used different ones."""
    path = bookkeeping_path(output_dir, OPTIONS_NAME)
    fs, inner = filesystem(path)
    wanted = options.to_dict()
    if fs.exists(inner) or adopt_legacy(join(output_dir, OPTIONS_NAME), path):
        recorded = read_json(path)
        if recorded != wanted:
            raise UserError(
                f"{path}: OUTPUT was cleaned with different options ({recorded}); use a new OUTPUT directory"
            )
        return
    write_json(path, wanted)


def clean_copy(
    input_dir: str, output_dir: str, options: CleanOptions, workers: int = 1, show_progress: bool = True
) -> CleanReport:
    """Clean every shard of ``input_dir`` into ``output_dir`` (same layout); return the checked report.

    All sources are loaded and every shard's columns checked before anything is
    written; shards finished by an earlier (possibly killed) run are skipped.
    """
    if input_dir.rstrip("/") == output_dir.rstrip("/") or (
        "://" not in input_dir and os.path.realpath(input_dir) == os.path.realpath(output_dir)
    ):
        raise UserError(f"{output_dir}: OUTPUT must differ from INPUT (the input is never modified in place)")
    try:
        shards = discover_shards(input_dir)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from exc
    loaded = build_stage(options)
    for shard in shards:
        check_shard_columns(shard, open_parquet(shard.parquet).schema_arrow.names, loaded.stage)
    _claim_output(output_dir, options)
    process = partial(clean_shard, output_dir=output_dir, stage=loaded.stage, batch_size=options.batch_size)
    results = run_shards(
        shards,
        process,
        output_dir=output_dir,
        name_of=_shard_name,
        workers=workers,
        description="clean",
        show_progress=show_progress,
    )
    report = CleanReport(
        input_dir=input_dir,
        output_dir=output_dir,
        options=options.to_dict(),
        shards=[results[s.name] for s in shards],
        removal_lists=loaded.removal.summary(),
        notes=loaded.notes,
    )
    report.check()
    report.write()
    return report
