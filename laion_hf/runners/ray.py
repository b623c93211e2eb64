"""The Ray runner: the same units and the same Stage objects, scheduled across a Ray cluster (or Ray local mode).

It only schedules (see :mod:`laion_hf.runners.base`); each unit runs the same
function as on the local runner, so outputs are the same files by construction.
Work goes to a pool of long-lived :class:`Worker` actors (``concurrency`` of
them), started once per runner and kept across passes: a Ray worker process
starts and imports torch and our modules once per run, not once per pass. (A
Ray Data pass per step, as before, started new actors and Ray Data's own
bookkeeping every time: 4-12 s a pass on this project's 2-core machine, more
than the work of a demo-sized pass; see ``## build`` in docs/benchmarks.md.)

- ``map``: one actor call per unfinished unit (:func:`run_unit`, which writes
  the unit's outputs and its done marker where it runs: OUTPUT must be storage
  every node sees, as for any multi-node run);
- ``map_stages``: one actor call per shard (:func:`transform`). The stage list
  is put in the object store once per pass; an actor sets it up (loads the
  models) on its first shard of the pass, reuses it for its other shards and
  lets it go when the pass ends (a local pool worker keeps it until its next
  pass). Rows are never regrouped: a shard's images are read, transformed and
  written by one actor, so they cross the network at most once (to the node
  that reads the shard) and a fused pass (filter + score in one stage list)
  moves them once.

A killed worker (a dead process, a lost node) is restarted by Ray and its
unit run again, up to :data:`RETRIES` times; outputs are written atomically,
so a half-done unit leaves nothing that looks complete. Extract's cross-file
dedup (:mod:`laion_hf.extract.dedup`) and the dedup step's decision
(:mod:`laion_hf.steps.dedup_decision`) are ``map``s over shuffle files, so
they run here as well.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from laion_hf.core.stage import Stage
from laion_hf.io.samples import SidecarFactory
from laion_hf.io.shards import Shard
from laion_hf.runners.base import Record, Unit, finish, progress_bar, run_unit, shard_name, split_finished, transform

#: How often a unit whose worker died (a killed process, a lost node) is run again before the step fails.
RETRIES = 3

#: The process's worker actors, shared by every RayRunner in it: ((Ray session, job, concurrency, GPUs), actors).
#: One pool at a time, so idle workers of one runner never hold the CPUs another runner's workers wait for.
_pool: tuple[tuple[str, str, int, float], list[Any]] | None = None


class Worker:
    """A Ray actor that runs units; during an image pass it holds the pass's stages, set up once."""

    def __init__(self) -> None:
        self.stages_key: str | None = None
        self.stages: list[Stage] = []

    def run(self, process: Callable[[Unit], Record], unit: Unit, output_dir: str, name: str) -> tuple[str, Record]:
        return name, run_unit(process, unit, output_dir, name)

    def transform(
        self, stages: list[Any], shard: Shard, output_dir: str, batch_size: int, sidecar: SidecarFactory | None
    ) -> tuple[str, Record]:
        """Transform one shard; ``stages`` is ``[object ref of the pass's stage list]`` (in a list, so Ray hands
        over the ref, not the value), set up here on the pass's first shard and reused for the rest."""
        import ray

        if stages[0].hex() != self.stages_key:
            self.release()
            self.stages = ray.get(stages[0])
            for stage in self.stages:
                stage.setup()
            self.stages_key = stages[0].hex()
        process = functools.partial(transform, output_dir=output_dir, stages=self.stages, batch_size=batch_size,
                                    sidecar=sidecar)
        return shard.name, run_unit(process, shard, output_dir, shard.name)

    def release(self) -> None:
        """Let the stages (and their models) go at the end of a pass."""
        self.stages, self.stages_key = [], None


@dataclass
class RayRunner:
    """Schedule units on Ray. ``address=None`` starts Ray locally with ``num_cpus`` CPUs.

    ``concurrency`` is the number of worker actors (units running at once);
    ``model_num_gpus`` the GPUs each actor of a model pass (filter, score)
    reserves. Actors are started on first use and kept for the next pass: one
    pool per process, shared by its runners while they ask for the same shape
    (a runner with another ``concurrency``, or a model pass with GPUs after a
    CPU pass, stops it and starts its own), so idle workers never hold the
    CPUs that new ones wait for.
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

    def workers(self, num_gpus: float = 0.0) -> list[Any]:
        """``concurrency`` worker actors reserving ``num_gpus`` each: the process's pool if it has that shape,
        else a new one (the old pool is stopped first)."""
        import ray

        global _pool
        self.start()
        context = ray.get_runtime_context()
        key = (context.get_session_name(), context.get_job_id(), self.concurrency, num_gpus)
        if _pool is not None and _pool[0] == key:
            return _pool[1]
        stop_workers()
        cpus = min(1.0, ray.cluster_resources().get("CPU", 1.0) / self.concurrency)
        actor = ray.remote(Worker).options(num_cpus=cpus, num_gpus=num_gpus, max_restarts=RETRIES,
                                           max_task_retries=RETRIES)
        _pool = (key, [actor.remote() for _ in range(self.concurrency)])
        return _pool[1]

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

        records, pending = split_finished(units, output_dir, name_of)
        if pending:
            workers = self.workers()[: len(pending)]
            process_ref = ray.put(process)  # pickled once, not once per unit
            self._run(workers, pending,
                      lambda actor, unit: actor.run.remote(process_ref, unit, output_dir, name_of(unit)),
                      records, description, total=len(units))
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

        records, pending = split_finished(shards, output_dir, shard_name)
        if pending:
            pool = self.workers(self.model_num_gpus if uses_model else 0.0)
            workers = pool[: len(pending)]
            stages_ref = [ray.put(list(stages))]  # pickled once per pass, not once per shard
            try:
                self._run(workers, pending, lambda actor, shard: actor.transform.remote(
                    stages_ref, shard, output_dir, self.batch_size, sidecar),
                    records, description or ", ".join(s.name for s in stages) or "copy", total=len(shards))
            finally:
                if _pool is not None and _pool[1] is pool:  # still running (not stopped after a lost worker)
                    ray.get([worker.release.remote() for worker in workers])
        return finish(shards, records, output_dir, shard_name)

    def _run(self, workers: list[Any], pending: list[Unit], call: Callable[[Any, Unit], Any],
             records: dict[str, Record], description: str, total: int) -> None:
        """Every pending unit through ``call`` on ``workers``; a unit's own error is raised after the others finish."""
        import ray
        from ray.util import ActorPool

        pool = ActorPool(workers)
        for unit in pending:
            pool.submit(call, unit)
        errors: list[BaseException] = []
        with progress_bar(disable=not self.show_progress) as progress:
            bar = progress.add_task(description, total=total, completed=len(records))
            while pool.has_next():
                try:
                    name, record = pool.get_next_unordered()
                    records[name] = record
                except ray.exceptions.RayTaskError as exc:  # the unit's own error, surfaced after the others
                    errors.append(exc.as_instanceof_cause())
                except ray.exceptions.RayActorError:  # out of restarts: the next pass starts new workers
                    stop_workers()
                    raise
                progress.advance(bar)
        if errors:
            raise errors[0]


def stop_workers() -> None:
    """End the process's worker actors (their processes and whatever they hold); the next pass starts new ones."""
    import ray

    global _pool
    if _pool is not None:
        (session, *_), actors = _pool
        _pool = None
        if ray.is_initialized() and ray.get_runtime_context().get_session_name() == session:
            for actor in actors:
                ray.kill(actor)
