"""The Ray runner: the same units and the same Stage objects, scheduled across a Ray cluster (or Ray local mode).

It only schedules (see :mod:`laion_hf.runners.base`); each unit runs the same
function as on the local runner, so outputs are the same files by construction:

- ``map``: one Ray task per unfinished unit (:func:`run_unit`, which writes the
  unit's outputs and its done marker where it runs: OUTPUT must be storage every
  node sees, as for any multi-node run);
- ``map_stages``: one Ray Data pass over the shard list with ``batch_size=1``:
  each actor of a class-based UDF sets the stages up once (model loading, with
  ``num_gpus`` for model passes) and then transforms whole shards
  (:func:`transform`). Rows are never regrouped: a shard's images are read,
  transformed and written by one actor, so they cross the network at most once
  (to the node that reads the shard) and a fused pass (filter + score + configs
  in one stage list) moves them once in all.

Whole-run decisions (the extract and dedup shuffles) are ``map``s over
partition files (see :mod:`laion_hf.io.partition`), so they run here as well.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa

from laion_hf.core.stage import Stage
from laion_hf.io.samples import SidecarFactory
from laion_hf.io.shards import Shard
from laion_hf.runners.base import Record, Unit, finish, progress_bar, run_unit, shard_name, split_finished, transform

#: How often a unit whose worker died (a killed process, a lost node) is run again before the step fails.
RETRIES = 3


class ShardTransformer:
    """Ray Data UDF: set the stages up once per actor, then transform (and mark done) one shard per call."""

    def __init__(self, stages: Sequence[Stage], output_dir: str, batch_size: int, sidecar: SidecarFactory | None) -> None:
        for stage in stages:
            stage.setup()
        self.stages = list(stages)
        self.output_dir = output_dir
        self.batch_size = batch_size
        self.sidecar = sidecar

    def __call__(self, rows: pa.Table) -> pa.Table:
        records = []
        for spec in rows.to_pylist():
            shard = Shard(name=spec["name"], parquet=spec["parquet"], tar=spec["tar"], stats=spec["stats"])
            process = lambda s: transform(s, self.output_dir, self.stages, self.batch_size, self.sidecar)  # noqa: E731
            records.append(json.dumps(run_unit(process, shard, self.output_dir, shard.name)))
        return pa.table({"shard": rows["name"], "record": records})


@dataclass
class RayRunner:
    """Schedule units on Ray. ``address=None`` starts Ray locally with ``num_cpus`` CPUs.

    ``concurrency`` is the number of actors of an image pass; ``model_num_gpus``
    the GPUs each actor of a model pass (filter, score) reserves.
    """

    address: str | None = None
    num_cpus: int | None = None
    object_store_memory: int | None = None
    concurrency: int = 1
    model_num_gpus: float = 0.0
    batch_size: int = 256
    show_progress: bool = True

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

    def map(
        self,
        units: Sequence[Unit],
        process: Callable[[Unit], Record],
        *,
        output_dir: str,
        name_of: Callable[[Unit], str] = str,
        description: str = "work",
    ) -> dict[str, Record]:
        import ray

        self.start()
        records, pending = split_finished(units, output_dir, name_of)
        task = ray.remote(num_cpus=1, max_retries=RETRIES)(run_unit)
        futures = {task.remote(process, unit, output_dir, name_of(unit)): unit for unit in pending}
        errors: list[BaseException] = []
        with progress_bar(disable=not self.show_progress) as progress:
            bar = progress.add_task(description, total=len(units), completed=len(records))
            while futures:
                ready, _ = ray.wait(list(futures), num_returns=1)
                unit = futures.pop(ready[0])
                try:
                    records[name_of(unit)] = ray.get(ready[0])
                except ray.exceptions.RayTaskError as exc:  # the unit's own error, surfaced after the others
                    errors.append(exc.as_instanceof_cause())
                progress.advance(bar)
        if errors:
            raise errors[0]
        return finish(units, records, output_dir, name_of)

    def map_stages(
        self,
        shards: Sequence[Shard],
        stages: Sequence[Stage],
        output_dir: str,
        *,
        sidecar: SidecarFactory | None = None,
        uses_model: bool = False,
        description: str | None = None,
    ) -> dict[str, Record]:
        import ray
        import ray.data

        self.start()
        records, pending = split_finished(shards, output_dir, shard_name)
        if pending:
            cpus = ray.cluster_resources().get("CPU", 1.0)
            items = [{"name": s.name, "parquet": s.parquet, "tar": s.tar, "stats": s.stats} for s in pending]
            done = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                ShardTransformer,
                fn_constructor_kwargs={
                    "stages": list(stages), "output_dir": output_dir, "batch_size": self.batch_size, "sidecar": sidecar,
                },
                batch_format="pyarrow",
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=min(self.concurrency, len(items))),
                num_cpus=min(1.0, cpus / self.concurrency),
                num_gpus=self.model_num_gpus if uses_model else 0,
                max_restarts=RETRIES,  # a dead actor is replaced ...
                max_task_retries=RETRIES,  # ... and its shard redone (outputs are written atomically)
            )
            with progress_bar(disable=not self.show_progress) as progress:
                bar = progress.add_task(description or ", ".join(s.name for s in stages) or "copy",
                                        total=len(shards), completed=len(records))
                for row in done.iter_rows():
                    records[row["shard"]] = json.loads(row["record"])
                    progress.advance(bar)
        return finish(shards, records, output_dir, shard_name)
