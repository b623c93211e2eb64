"""The dedup step: exact (LAION hash) and near (pHash, optionally CLIP embedding) duplicates across a run.

Three passes (the rules are :mod:`laion_hf.stages.duplicates`), each made of runner maps:

1. *signatures*: :func:`signature_shard` over the shards, writing
   ``(shard, key, hash, phash)`` to ``OUTPUT/_dedup/signatures``;
2. *decide*: the decision's shuffle over those signatures (and the embeddings'
   SimHashes), no unit bigger than a few million rows
   (:mod:`laion_hf.steps.dedup_decision`); decisions are written per shard to
   ``OUTPUT/_dedup/decisions``;
3. *mark*: :func:`mark_shard` (the
   :class:`~laion_hf.stages.duplicates.DuplicateMarker` stage over one shard).

Only the keeper walk sees the whole run, and only its close pairs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.core.schema import resolve_columns
from laion_hf.core.stage import StageStats, alive_mask
from laion_hf.io.atomic import atomic_path, filesystem, join, read_json, write_json
from laion_hf.io.samples import IMAGE, image_shards, load_shard_stages, read_sample_batches, transform_shard
from laion_hf.io.shards import Shard
from laion_hf.io.shuffle import remove_other_runs
from laion_hf.runners.base import Runner, shard_name
from laion_hf.runners.local import LocalRunner
from laion_hf.stages.duplicates import (
    DEFAULT_MAX_DISTANCE,
    DEFAULT_MAX_EMBEDDING_DISTANCE,
    SIGNATURE_SCHEMA,
    DedupError,
    DuplicateMarker,
    embedding_files,
    perceptual_hash,
    signature_hashes,
)
from laion_hf.steps.dedup_decision import DecisionPlan, decide
from laion_hf.steps.registry import Context, Driver
from laion_hf.steps.specs import DedupSpec

REPORT_FILE = "dedup_report.json"
OPTIONS_FILE = "dedup_options.json"
_WORK = "_dedup"


def signature_shard(shard: Shard, signatures_dir: str, batch_size: int = 256) -> dict[str, Any]:
    """Write ``(shard, key, hash, phash)`` of every sample of ``shard``; return its row count.

    Rows that arrive marked (``missing-image``) get no signature: a removed
    row must never be the keeper of another.
    """
    parts: list[pa.Table] = []
    for batch in read_sample_batches(shard, batch_size):
        batch = batch.filter(alive_mask(batch))
        key_column = resolve_columns(batch.column_names, ["key"])["key"]
        parts.append(
            pa.table(
                {
                    "shard": pa.array([shard.name] * batch.num_rows, pa.string()),
                    "key": batch[key_column].cast(pa.string()),
                    "hash": signature_hashes(batch),
                    "phash": pa.array([perceptual_hash(b) for b in batch[IMAGE].to_pylist()], pa.int64()),
                },
                schema=SIGNATURE_SCHEMA,
            )
        )
    table = pa.concat_tables(parts) if parts else SIGNATURE_SCHEMA.empty_table()
    with atomic_path(join(signatures_dir, f"{shard.name}.parquet")) as tmp:
        pq.write_table(table, tmp)
    return {"shard": shard.name, "rows": table.num_rows}


def mark_shard(shard: Shard, decisions_dir: str, output_dir: str, batch_size: int = 256) -> dict[str, Any]:
    marker = DuplicateMarker.from_file(join(decisions_dir, f"{shard.name}.parquet"))
    return transform_shard(shard, output_dir, [marker], batch_size)


@dataclass
class DedupReport:
    """Merged stage stats (rows in = kept + removed by reason) and where the output is."""

    stats: StageStats
    output_dir: str
    shards: list[str] = field(default_factory=list)
    max_distance: int | None = DEFAULT_MAX_DISTANCE

    def to_dict(self) -> dict[str, Any]:
        return {**self.stats.to_dict(), "output_dir": self.output_dir, "shards": self.shards,
                "max_distance": self.max_distance}


def _check_options(output_dir: str, options: dict[str, Any]) -> None:
    """Record the run's options; a resume with other options would mix two decisions, so it is refused."""
    path = join(output_dir, OPTIONS_FILE)
    fs, inner = filesystem(path)
    if not fs.exists(inner):
        write_json(path, options)
    elif (recorded := read_json(path)) != options:
        raise DedupError(f"{path}: {output_dir} was deduplicated with {recorded}, not {options}; use another OUTPUT")


def _decide_run(
    signatures_dir: str, decisions_dir: str, rows: dict[str, int], max_distance: int | None,
    embeddings: str | None, max_embedding_distance: int | None, runner: Runner, rows_per_unit: int | None,
) -> None:
    """The decision's shuffle (:mod:`laion_hf.steps.dedup_decision`), each of its maps a step of ``runner``;
    its scratch folder is named by its plan, so a resume with another plan starts a new one."""
    summary = join(decisions_dir, "_decided.json")
    fs, inner = filesystem(summary)
    if fs.exists(inner):
        return
    names = sorted(rows)
    plan = DecisionPlan.plan(
        [join(signatures_dir, f"{name}.parquet") for name in names], [rows[name] for name in names], "",
        max_distance=max_distance, embeddings_dir=embeddings,
        embedding_parts=embedding_files(embeddings) if embeddings is not None else (),
        max_embedding_distance=max_embedding_distance if embeddings is not None else None,
        rows_per_unit=rows_per_unit,
    )
    scratch = join(decisions_dir, "_scratch")
    run = hashlib.sha256(repr(plan).encode()).hexdigest()[:16]
    remove_other_runs(scratch, keep=run)
    removed = decide(dataclasses.replace(plan, work_dir=join(scratch, run)), decisions_dir, runner)
    write_json(summary, {"rows": sum(rows.values()), "removed": dict(removed)})
    fs.rm(filesystem(scratch)[1], recursive=True)


def dedup_shards(
    input_dir: str,
    output_dir: str,
    *,
    max_distance: int | None = DEFAULT_MAX_DISTANCE,
    embeddings: str | None = None,
    max_embedding_distance: int = DEFAULT_MAX_EMBEDDING_DISTANCE,
    workers: int = 1,
    batch_size: int = 256,
    show_progress: bool = True,
    runner: Runner | None = None,
    rows_per_unit: int | None = None,
) -> DedupReport:
    """Remove exact (LAION hash) and near (pHash, optionally CLIP embedding) duplicates across ``input_dir``.

    Resumable per shard in each pass; ``max_distance=None`` turns the pHash
    pass off. ``embeddings`` is a clip-retrieval folder (``laion-hf filter``'s
    output) whose ``img_emb`` rows are matched to samples by key. The
    per-shard passes and the decision's maps are ``runner``'s units (default:
    a local runner with ``workers`` processes); ``rows_per_unit`` sizes the
    decision's units (default
    :data:`~laion_hf.steps.dedup_decision.ROWS_PER_UNIT`, under 1 GB each;
    larger on big workers means fewer, bigger shuffle files). It changes no
    decision.
    """
    shards = image_shards(input_dir)
    _check_options(output_dir, {"input_dir": input_dir, "max_distance": max_distance, "embeddings": embeddings,
                                "max_embedding_distance": max_embedding_distance if embeddings else None})
    work = join(output_dir, _WORK)
    signatures_dir, decisions_dir = join(work, "signatures"), join(work, "decisions")
    runner = runner or LocalRunner(workers=workers, show_progress=show_progress)
    signed = runner.map(shards, partial(signature_shard, signatures_dir=signatures_dir, batch_size=batch_size),
                        output_dir=signatures_dir, name_of=shard_name, description="dedup: signatures")
    _decide_run(signatures_dir, decisions_dir, {name: record["rows"] for name, record in signed.items()},
                max_distance, embeddings, max_embedding_distance, runner, rows_per_unit)
    recorded = runner.map(shards, partial(mark_shard, decisions_dir=decisions_dir, output_dir=output_dir,
                                          batch_size=batch_size),
                          output_dir=output_dir, name_of=shard_name, description="dedup: mark")
    stats = StageStats("dedup")
    for shard_stats in recorded.values():
        for stage in load_shard_stages(shard_stats):
            stats.merge(stage)
    stats.check()
    report = DedupReport(stats, output_dir, [s.name for s in shards], max_distance)
    write_json(join(output_dir, REPORT_FILE), report.to_dict())
    return report


def work(spec: DedupSpec, context: Context) -> Driver:
    """The recipe's dedup step: signatures and marks are units of the pipeline's runner."""

    def run(source: str, output_dir: str, runner: Runner) -> list[StageStats]:
        started = time.perf_counter()
        report = dedup_shards(source, output_dir, max_distance=spec.near_duplicate_max_distance,
                              batch_size=context.options.get("batch_size", 256), runner=runner)
        return [report.stats.timed(time.perf_counter() - started)]

    return Driver(run)
