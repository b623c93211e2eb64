"""The dedup step: exact (LAION hash) and near (pHash, optionally CLIP embedding) duplicates across a run.

Three passes (the rules are :mod:`laion_hf.stages.duplicates`):

1. *signatures*: a runner maps :func:`signature_shard` over the shards, writing
   ``(shard, key, hash, phash)`` to ``OUTPUT/_dedup/signatures``;
2. *decide*: only those columns of every shard are read, once, in (shard, key)
   order (:func:`~laion_hf.stages.duplicates.decide`); decisions are written
   per shard to ``OUTPUT/_dedup/decisions``;
3. *mark*: a runner maps :func:`mark_shard` (the
   :class:`~laion_hf.stages.duplicates.DuplicateMarker` stage over one shard).

Only the decision holds the whole run, and only 40 bytes a row of it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laion_hf.core.schema import resolve_columns
from laion_hf.core.stage import StageStats, alive_mask
from laion_hf.io.atomic import atomic_path, filesystem, join, read_json, remove_stale_temporaries, write_json
from laion_hf.io.samples import IMAGE, image_shards, load_shard_stages, read_sample_batches, transform_shard
from laion_hf.io.shards import Shard
from laion_hf.runners.base import Runner, shard_name
from laion_hf.runners.local import LocalRunner
from laion_hf.stages.duplicates import (
    DEFAULT_MAX_DISTANCE,
    DEFAULT_MAX_EMBEDDING_DISTANCE,
    SIGNATURE_SCHEMA,
    DedupError,
    DuplicateMarker,
    decide,
    embedding_signatures,
    perceptual_hash,
    signature_hashes,
)
from laion_hf.steps.registry import Context, Driver
from laion_hf.steps.specs import DedupSpec

REPORT_FILE = "dedup_report.json"
OPTIONS_FILE = "dedup_options.json"
_WORK = "_dedup"
_DECISION_SCHEMA = pa.schema([("key", pa.string()), ("duplicate_of", pa.string()), ("reason", pa.string())])


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
    signatures_dir: str, decisions_dir: str, shards: list[Shard], max_distance: int | None,
    embeddings: str | None, max_embedding_distance: int | None,
) -> None:
    summary = join(decisions_dir, "_decided.json")
    fs, inner = filesystem(summary)
    if fs.exists(inner):
        return
    remove_stale_temporaries(decisions_dir)
    signatures = pa.concat_tables(
        [pq.read_table(join(signatures_dir, f"{s.name}.parquet"), schema=SIGNATURE_SCHEMA) for s in shards]
    )
    if embeddings is not None:
        signatures = signatures.join(embedding_signatures(embeddings), keys="key", join_type="left outer")
    removed = decide(signatures, max_distance, max_embedding_distance if embeddings is not None else None)
    for shard in shards:
        rows = removed.filter(pc.equal(removed["shard"], shard.name)).select(_DECISION_SCHEMA.names)
        with atomic_path(join(decisions_dir, f"{shard.name}.parquet")) as tmp:
            pq.write_table(rows.cast(_DECISION_SCHEMA), tmp)
    write_json(summary, {"rows": signatures.num_rows,
                         "removed": dict(Counter(removed["reason"].to_pylist()))})


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
) -> DedupReport:
    """Remove exact (LAION hash) and near (pHash, optionally CLIP embedding) duplicates across ``input_dir``.

    Resumable per shard in each pass; ``max_distance=None`` turns the pHash
    pass off. ``embeddings`` is a clip-retrieval folder (``laion-hf filter``'s
    output) whose ``img_emb`` rows are matched to samples by key. The
    per-shard passes are ``runner``'s units (default: a local runner with
    ``workers`` processes); the decision reads only the signatures, here.
    """
    shards = image_shards(input_dir)
    _check_options(output_dir, {"input_dir": input_dir, "max_distance": max_distance, "embeddings": embeddings,
                                "max_embedding_distance": max_embedding_distance if embeddings else None})
    work = join(output_dir, _WORK)
    signatures_dir, decisions_dir = join(work, "signatures"), join(work, "decisions")
    runner = runner or LocalRunner(workers=workers, show_progress=show_progress)
    runner.map(shards, partial(signature_shard, signatures_dir=signatures_dir, batch_size=batch_size),
               output_dir=signatures_dir, name_of=shard_name, description="dedup: signatures")
    _decide_run(signatures_dir, decisions_dir, shards, max_distance, embeddings, max_embedding_distance)
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
