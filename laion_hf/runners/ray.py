"""The Ray Data runner: the same Stage objects, scheduled across a Ray cluster (or Ray local mode).

It only schedules; the dataset logic stays in the stages and in
:mod:`laion_hf.io.samples`. One pass over a directory of img2dataset-layout
shards:

1. *read*: one task per unfinished shard streams it as Arrow batches
   (:func:`read_sample_batches`: sidecar metadata + original image bytes),
   tagged with the shard name and the row's position in it;
2. *stages*: each Stage runs through ``map_batches(batch_format="pyarrow")`` as
   a class-based UDF, so ``setup()`` (model loading) happens once per actor;
   model stages get ``num_gpus`` and their own ``concurrency``. The UDF notes
   which stage dropped a row and the time it took, as columns, so counts are
   aggregated from the data itself (by stage and ``drop_reason``);
3. *write*: rows are grouped by shard (a shuffle on the shard name), put back
   in their original order and written by the same :class:`SampleShardWriter`
   as the local runner, with the same done marker - so output rows are the
   same and a run resumes across runners.

Dedup is global: :meth:`RayRunner.run_dedup` shuffles only the dedup stage's
signatures (shard, key, hash, pHash) by hash (``groupby``), so image bytes
never cross the network for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from laion_hf.core.stage import DROP_REASON, Stage, StageStats, alive_mask, count_reasons, ensure_drop_reason
from laion_hf.io.atomic import mark_done, read_done, remove_stale_temporaries
from laion_hf.io.data_card import write_data_card
from laion_hf.io.samples import SampleShardWriter, SidecarFactory, read_sample_batches
from laion_hf.io.shards import Shard

SHARD = "__shard"
ROW = "__row"
DROPPED_AT = "__dropped_at"
_SECONDS = "__seconds_{}"


def _seconds_column(index: int) -> str:
    return _SECONDS.format(index)


def _read_shards(rows: pa.Table, batch_size: int):
    """Ray UDF: for each shard row, yield its sample batches tagged with shard name and row index."""
    for spec in rows.to_pylist():
        shard = Shard(name=spec["name"], parquet=spec["parquet"], tar=spec["tar"], stats=spec["stats"])
        start = 0
        for batch in read_sample_batches(shard, batch_size):
            batch = ensure_drop_reason(batch)
            batch = batch.append_column(SHARD, pa.array([shard.name] * batch.num_rows, pa.string()))
            batch = batch.append_column(ROW, pa.array(np.arange(start, start + batch.num_rows), pa.int64()))
            # Rows read already marked (missing-image) count as dropped by the first stage, as on the local runner.
            arrived_marked = pc.if_else(alive_mask(batch), pa.scalar(None, pa.int32()), pa.scalar(0, pa.int32()))
            batch = batch.append_column(DROPPED_AT, arrived_marked)
            start += batch.num_rows
            yield batch


class StageActor:
    """Ray class-based UDF around one Stage: ``setup()`` once per actor, counts recorded per row."""

    def __init__(self, stage: Stage, index: int) -> None:
        self.stage = stage
        self.index = index
        stage.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        alive = alive_mask(batch)
        started = time.perf_counter()
        batch = self.stage(batch)
        elapsed = time.perf_counter() - started
        newly = pc.and_(alive, pc.invert(alive_mask(batch)))
        dropped_at = pc.if_else(newly, pa.scalar(self.index, pa.int32()), batch[DROPPED_AT])
        batch = batch.set_column(batch.column_names.index(DROPPED_AT), DROPPED_AT, dropped_at)
        # The batch's time spread over its rows: summing the column gives the stage's seconds.
        share = elapsed / max(batch.num_rows, 1)
        return batch.append_column(_seconds_column(self.index), pa.array([share] * batch.num_rows, pa.float64()))


def shard_stats(table: pa.Table, stage_names: Sequence[str]) -> list[StageStats]:
    """Per-stage stats of one shard, from the ``__dropped_at`` / ``drop_reason`` / seconds columns."""
    dropped_at = table[DROPPED_AT]
    alive = table.num_rows
    stats = []
    for index, name in enumerate(stage_names):
        mine = table.filter(pc.fill_null(pc.equal(dropped_at, index), False))
        dropped = count_reasons(mine.select([DROP_REASON]))
        seconds = pc.sum(table[_seconds_column(index)]).as_py() or 0.0
        stats.append(StageStats(name, rows_in=alive, kept=alive - mine.num_rows, dropped=dropped, seconds=seconds))
        alive -= mine.num_rows
    return stats


class ShardWriterUDF:
    """Ray UDF for ``map_groups``: write one shard's rows, in original order, and its done marker."""

    def __init__(self, output_dir: str, stage_names: Sequence[str], sidecar: SidecarFactory | None = None) -> None:
        self.output_dir = output_dir
        self.stage_names = list(stage_names)
        self.sidecar = sidecar

    def __call__(self, group: pa.Table) -> pa.Table:
        group = group.sort_by(ROW)
        name = group[SHARD][0].as_py()
        stats = shard_stats(group, self.stage_names)
        for s in stats:
            s.check()
        internal = [SHARD, ROW, DROPPED_AT] + [_seconds_column(i) for i in range(len(self.stage_names))]
        extra = self.sidecar(self.output_dir, name) if self.sidecar else None
        with SampleShardWriter(self.output_dir, name, extra) as writer:
            writer.write(group.drop_columns(internal))
        record = {"shard": name, "stages": [s.to_dict() for s in stats]}
        mark_done(self.output_dir, name, record)
        return pa.table({"shard": [name], "record": [json.dumps(record)]})


@dataclass
class RayRunner:
    """Schedule stages on Ray Data. ``address=None`` starts Ray locally with ``num_cpus`` CPUs.

    ``concurrency`` is the number of actors per stage; ``model_num_gpus`` the GPUs
    each actor of a model step (filter, score) reserves.
    """

    address: str | None = None
    num_cpus: int | None = None
    object_store_memory: int | None = None
    concurrency: int = 1
    model_num_gpus: float = 0.0
    batch_size: int = 256

    def start(self) -> None:
        import ray

        if ray.is_initialized():
            return
        if self.address:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(
                num_cpus=self.num_cpus,
                object_store_memory=self.object_store_memory,
                include_dashboard=False,
                log_to_driver=False,
            )
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False

    def _cpus_per_actor(self, pools: int) -> float:
        """The cluster's CPUs shared among ``pools`` operators, so that every one can run at once.

        Ray Data actors hold their CPUs for their lifetime: pools that together ask
        for more CPUs than the cluster has (or leave none for the reading tasks)
        never all start, and the pipeline waits forever.
        """
        import ray

        cpus = ray.cluster_resources().get("CPU", 1.0)
        return min(1.0, cpus / (pools * self.concurrency))

    def run_stages(
        self,
        shards: Sequence[Shard],
        stages: Sequence[Stage],
        output_dir: str,
        uses_model: bool = False,
        sidecar: SidecarFactory | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Run ``stages`` over ``shards`` into ``output_dir``; return each shard's record (as the local runner does).

        ``uses_model`` gives each actor ``model_num_gpus`` GPUs; ``sidecar`` is
        the per-shard extra writer (see :class:`laion_hf.io.samples.Sidecar`).
        """
        import ray.data

        self.start()
        remove_stale_temporaries(output_dir)
        records: dict[str, dict[str, Any]] = {}
        pending = []
        for shard in shards:
            recorded = read_done(output_dir, shard.name)
            if recorded is None:
                pending.append(shard)
            else:
                records[shard.name] = recorded
        if pending:
            cpus = self._cpus_per_actor(len(stages) + 2)  # reading, each stage, writing
            items = [{"name": s.name, "parquet": s.parquet, "tar": s.tar, "stats": s.stats} for s in pending]
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            ds = ds.map_batches(
                _read_shards, batch_format="pyarrow", batch_size=1, num_cpus=cpus, fn_kwargs={"batch_size": self.batch_size}
            )
            for index, stage in enumerate(stages):
                ds = ds.map_batches(
                    StageActor,
                    fn_constructor_kwargs={"stage": stage, "index": index},
                    batch_format="pyarrow",
                    batch_size=self.batch_size,
                    concurrency=self.concurrency,
                    num_cpus=cpus,
                    num_gpus=self.model_num_gpus if uses_model else 0,
                )
            # One partition per shard: Ray's default (200) costs more than the work on a small run.
            ds = ds.groupby(SHARD, num_partitions=len(pending)).map_groups(
                ShardWriterUDF,
                fn_constructor_kwargs={"output_dir": output_dir, "stage_names": [s.name for s in stages], "sidecar": sidecar},
                batch_format="pyarrow",
                concurrency=self.concurrency,
                num_cpus=cpus,
            )
            for row in ds.take_all():
                records[row["shard"]] = json.loads(row["record"])
        write_data_card(output_dir)
        return {s.name: records[s.name] for s in shards}

    def run_dedup(self, source_dir: str, output_dir: str, max_distance: int | None, shards: Sequence[Shard]) -> StageStats:
        """Run-wide dedup (:mod:`laion_hf.stages.dedup`) with the exact decision partitioned by hash.

        Signatures are one task per shard; the exact decision is a ``groupby("hash")``
        whose groups go through the stage's own :func:`decide`; near duplicates are
        decided over the survivors' signatures; marking is :meth:`run_stages`
        with the stage's :class:`DuplicateMarker`. Output and counts equal
        :func:`dedup_shards`'s.
        """
        import ray.data

        from laion_hf.stages import dedup

        self.start()
        signatures_dir = f"{output_dir}/_dedup/signatures"
        items = [{"name": s.name, "parquet": s.parquet, "tar": s.tar, "stats": s.stats} for s in shards]
        ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _SignatureUDF,
            fn_constructor_kwargs={"signatures_dir": signatures_dir, "batch_size": self.batch_size},
            batch_format="pyarrow",
            batch_size=1,
            concurrency=self.concurrency,
            num_cpus=self._cpus_per_actor(1),
        ).materialize()
        files = [f"{signatures_dir}/{s.name}.parquet" for s in shards]
        exact = (
            ray.data.from_items([{"path": f} for f in files], override_num_blocks=len(files))
            .map_batches(_read_signatures, batch_format="pyarrow", batch_size=1)
            .groupby("hash", num_partitions=max(1, min(len(files), 64)))
            .map_groups(_exact_duplicates, batch_format="pyarrow")
        )
        removed = _concat(_blocks(exact))
        decisions = dedup_decisions(files, removed, max_distance)
        marker = dedup.DuplicateMarker(decisions)
        records = self.run_stages(shards, [marker], output_dir)
        total = StageStats(marker.name)
        for record in records.values():
            total.merge(StageStats.from_dict(record["stages"][0]))
        return total


class _SignatureUDF:
    """Ray UDF: the dedup stage's per-shard signatures (resumable by the same done markers)."""

    def __init__(self, signatures_dir: str, batch_size: int) -> None:
        self.signatures_dir = signatures_dir
        self.batch_size = batch_size

    def __call__(self, rows: pa.Table) -> pa.Table:
        from laion_hf.stages.dedup import signature_shard

        for spec in rows.to_pylist():
            if read_done(self.signatures_dir, spec["name"]) is None:
                shard = Shard(name=spec["name"], parquet=spec["parquet"], tar=spec["tar"], stats=spec["stats"])
                mark_done(self.signatures_dir, shard.name, signature_shard(shard, self.signatures_dir, self.batch_size))
        return pa.table({"shard": rows["name"]})


def _read_signatures(rows: pa.Table) -> pa.Table:
    """Ray UDF: the signature files named in ``rows`` (one task per file; the files are small)."""
    import pyarrow.parquet as pq

    return pa.concat_tables([pq.read_table(path) for path in rows["path"].to_pylist()])


def _exact_duplicates(group: pa.Table) -> pa.Table:
    """One hash's rows -> all but the first in (shard, key) order, by the dedup stage's own rule."""
    from laion_hf.stages.dedup import decide

    return decide(group, max_distance=None)


def _blocks(ds) -> list[pa.Table]:
    import ray

    return [ray.get(ref) for ref in ds.to_arrow_refs()]


def _concat(tables: list[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else pa.table({"shard": [], "key": [], "duplicate_of": [], "reason": []})


def dedup_decisions(signature_files: Sequence[str], exact: pa.Table, max_distance: int | None) -> dict[str, tuple[str, str]]:
    """key -> (kept key, reason) for every removed row: the exact decisions, then near duplicates among survivors.

    An exact duplicate whose keeper is itself a near duplicate points at the
    row finally kept, as :func:`laion_hf.stages.dedup.decide` does in one pass.
    """
    import pyarrow.parquet as pq

    from laion_hf.stages.dedup import decide

    decisions = {k: (d, r) for k, d, r in zip(*(exact[c].to_pylist() for c in ("key", "duplicate_of", "reason")))}
    if max_distance is not None:
        signatures = pa.concat_tables([pq.read_table(f) for f in signature_files])
        survivors = signatures.filter(pc.invert(pc.is_in(signatures["key"], value_set=pa.array(list(decisions), pa.string()))))
        near = decide(survivors, max_distance)
        near_of = {k: (d, r) for k, d, r in zip(*(near[c].to_pylist() for c in ("key", "duplicate_of", "reason")))}
        decisions = {k: (near_of[d][0] if d in near_of else d, r) for k, (d, r) in decisions.items()}
        decisions.update(near_of)
    return decisions
