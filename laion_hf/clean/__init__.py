"""``laion-hf clean``: turn an existing LAION copy into Re-LAION research / research-safe.

Modules: :mod:`options` (loading sources into a stage), :mod:`shard` (one
shard's parquet + tar), :mod:`report` (counts and invariant), :mod:`verify`
(re-reading the output); removal lists are :mod:`laion_hf.io.removal_lists`,
the stage that marks rows :mod:`laion_hf.stages.removal`. :func:`clean_copy`
is the command's step: it hands the shards to the local runner (in parallel,
resumable through done markers), so this package sits with the steps, above
the runners. With ``metadata_output`` it cleans the whole copy: the download,
then the LAION metadata it came from, which also loses the rows whose image an
image list removed from the download.
"""

from __future__ import annotations

import os
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc

from laion_hf.clean.options import CleanOptions, build_stage, default_workers, metadata_stage
from laion_hf.clean.report import REPORT_NAME, CleanReport
from laion_hf.clean.shard import check_shard_columns, clean_shard, image_removals_path
from laion_hf.clean.verify import Violation, verify_clean, verify_copy
from laion_hf.core.errors import UserError
from laion_hf.io.atomic import adopt_legacy, bookkeeping_path, filesystem, join, read_json, write_json
from laion_hf.io.parquet import open_parquet
from laion_hf.io.removal_lists import KINDS, RemovalSets, load_removal_sets, parse_spec
from laion_hf.io.shards import Shard, discover_shards
from laion_hf.runners.base import shard_name
from laion_hf.runners.local import LocalRunner
from laion_hf.stages.removal import VARIANT_THRESHOLDS, RemovalStage

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


def _same_place(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/") or ("://" not in a and os.path.realpath(a) == os.path.realpath(b))


def _shards(directory: str) -> list[Shard]:
    try:
        return discover_shards(directory)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from exc


def sample_removals(output_dir: str, shards: list[Shard]) -> dict[str, pa.Array]:
    """reason -> LAION hashes of the rows an image list removed from the cleaned ``shards`` (flagged rows only)."""
    by_reason: dict[str, list[pa.Array]] = {}
    for shard in shards:
        path = image_removals_path(output_dir, shard.name)
        fs, inner = filesystem(path)
        if not fs.exists(inner):
            continue
        table = open_parquet(path).read()
        for reason in pc.unique(table["reason"]).to_pylist():
            by_reason.setdefault(reason, []).append(pc.filter(table["hash"], pc.equal(table["reason"], reason)))
    return {reason: pc.unique(pa.chunked_array(arrays)) for reason, arrays in by_reason.items()}


def _clean_shards(
    input_dir: str, shards: list[Shard], output_dir: str, options: CleanOptions, stage: RemovalStage,
    loaded_notes: list[str], removal_lists: list[dict], workers: int, show_progress: bool, description: str,
) -> CleanReport:
    """Run :func:`clean_shard` over ``shards`` into ``output_dir`` and write its checked report."""
    _claim_output(output_dir, options)
    process = partial(clean_shard, output_dir=output_dir, stage=stage, batch_size=options.batch_size)
    runner = LocalRunner(workers=workers, show_progress=show_progress)
    results = runner.map(shards, process, output_dir=output_dir, name_of=shard_name, description=description)
    report = CleanReport(
        input_dir=input_dir,
        output_dir=output_dir,
        options=options.to_dict(),
        shards=[results[s.name] for s in shards],
        removal_lists=removal_lists,
        notes=loaded_notes,
    )
    report.check()
    return report


def clean_copy(
    input_dir: str, output_dir: str, options: CleanOptions, workers: int | None = None, show_progress: bool = True
) -> CleanReport:
    """Clean every shard of ``input_dir`` into ``output_dir`` (same layout); return the checked report.

    All sources are loaded and every shard's columns checked before anything is
    written; shards finished by an earlier (possibly killed) run are skipped.
    With ``options.metadata_output`` the metadata (``options.metadata``) is
    cleaned into it afterwards (:func:`laion_hf.clean.options.metadata_stage`);
    its report is ``report.metadata`` and its own ``clean_report.json``.
    ``workers`` defaults to :func:`laion_hf.clean.options.default_workers`.
    """
    if _same_place(input_dir, output_dir):
        raise UserError(f"{output_dir}: OUTPUT must differ from INPUT (the input is never modified in place)")
    if options.metadata_output and any(
        _same_place(options.metadata_output, other) for other in (input_dir, output_dir, options.metadata or "")
    ):
        raise UserError(f"{options.metadata_output}: --metadata-output must differ from INPUT, OUTPUT and --metadata")
    workers = workers or default_workers()
    shards = _shards(input_dir)
    loaded = build_stage(options)
    for shard in shards:
        check_shard_columns(shard, open_parquet(shard.parquet).schema_arrow.names, loaded.stage)
    metadata_shards = _shards(options.metadata) if options.metadata_output else []
    for shard in metadata_shards:
        check_shard_columns(shard, open_parquet(shard.parquet).schema_arrow.names, metadata_stage(loaded.stage, {}))
    lists = loaded.removal.summary()
    report = _clean_shards(input_dir, shards, output_dir, options, loaded.stage, loaded.notes, lists, workers,
                           show_progress, "clean")
    if options.metadata_output:
        stage = metadata_stage(loaded.stage, sample_removals(output_dir, shards))
        notes = [f"{sum(len(v) for v in (stage.sample_removals or {}).values())} LAION hashes of download rows "
                 f"removed by image lists also removed from the metadata"]
        report.metadata = _clean_shards(options.metadata, metadata_shards, options.metadata_output, options, stage,
                                        notes, lists, workers, show_progress, "clean metadata")
        report.metadata.write()
    report.write()
    return report
