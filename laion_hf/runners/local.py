"""The default runner: units in this process, or across a local pool of worker processes kept between passes.

See :mod:`laion_hf.runners.base` for what every runner guarantees (resume by
done markers, records, errors after the other units). Workers start as fresh
interpreters, never as forks of this process: a fork inherits the locks of this
process's thread pools (torch's OpenMP team once any model ran here), and a
worker that runs torch then waits forever. (Not "forkserver": its server keeps
the environment of its first use; spawn takes the current one.) A script that
uses more than one worker therefore needs the ``if __name__ == "__main__":`` guard.

A spawned worker pays for a new interpreter and our imports (3-4 s a pass on a
busy 2-core machine), so the pool is kept, as the Ray runner keeps its actors:
one pool per worker count in this process, shared by every ``LocalRunner``,
spawned on first use and ended by :func:`shutdown_pools` (at interpreter exit,
or by a caller). A spawned worker sees the ``os.environ``, ``sys.path`` and
working directory of the moment it was spawned and never again reads this
process's, so the pools are kept only while those are unchanged: a pass after
an environment change (an offline flag, a cache or data path, a test's
monkeypatch) ends them and spawns new workers. A pool that broke (a worker
killed or out of memory) is ended too, and the next pass gets a new one.

Each pool task carries its pass's id (and, for an image pass, the temporary
file its stages were pickled into, once per pass): a worker meeting a new pass
lets the previous pass's stages (and their models) go, then loads and sets up
the new ones once and keeps them for its other shards of the pass; they stay
until its next pass, or its end.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import multiprocessing
import os
import pickle
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from laion_hf.core.stage import Stage
from laion_hf.io.samples import SidecarFactory
from laion_hf.io.shards import Shard
from laion_hf.runners.base import Record, Unit, finish, progress_bar, run_unit, shard_name, split_finished, transform

START_METHOD = "spawn"

#: This process's kept pools by worker count, and the environment their workers were spawned in.
_pools: dict[int, ProcessPoolExecutor] = {}
_pools_environment: tuple[object, ...] | None = None

#: The pass this process is running units of, and that pass's stages (set up), if it is an image pass.
_pass_id: str | None = None
_pass_stages: list[Stage] = []


def _environment() -> tuple[object, ...]:
    """What a spawned worker copies from this process when it starts (see the module docstring)."""
    return tuple(sorted(os.environ.items())), tuple(sys.path), os.getcwd()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """The process's pool of ``workers`` spawned processes: the kept one, or a new one if there is none or
    this process's environment changed since its workers were spawned (then every kept pool is ended first)."""
    global _pools_environment
    environment = _environment()
    if environment != _pools_environment:
        shutdown_pools()
        _pools_environment = environment
    if workers not in _pools:
        _pools[workers] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(START_METHOD))
    return _pools[workers]


def shutdown_pools(workers: int | None = None) -> None:
    """End the kept pool of ``workers`` processes (every kept pool if None): its queued units are cancelled,
    its workers finish their running unit and exit. The next pass spawns new workers."""
    for count in list(_pools) if workers is None else [workers]:
        pool = _pools.pop(count, None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown_pools)


def _use_pass(pass_id: str, stages: Sequence[Stage] | None) -> None:
    """Make ``pass_id`` this process's pass: the previous pass's stages (and models) are let go before the new
    ones are set up, so a worker never holds two passes' models."""
    global _pass_id, _pass_stages
    _pass_id, _pass_stages = None, []
    for stage in stages or ():
        stage.setup()
    _pass_id, _pass_stages = pass_id, list(stages or ())


def _pool_task(pass_id: str, stages_file: str | None, process: Callable[[Unit], Record], unit: Unit,
               output_dir: str, name: str) -> Record:
    """A pool task: one unit of pass ``pass_id``; on the pass's first unit here, its stages are read from
    ``stages_file`` and set up."""
    if pass_id != _pass_id:
        stages = None
        if stages_file is not None:
            with open(stages_file, "rb") as f:
                stages = pickle.load(f)
        _use_pass(pass_id, stages)
    return run_unit(process, unit, output_dir, name)


@contextlib.contextmanager
def _stages_file(stages: list[Stage] | None) -> Iterator[str | None]:
    """A pass's stages pickled once into a temporary file for its pool tasks to name, removed after the pass:
    a stage can carry large data (a removal list's hashes), which then crosses to a worker once per pass, not
    with every unit."""
    if stages is None:
        yield None
        return
    descriptor, path = tempfile.mkstemp(prefix="laion-hf-stages-", suffix=".pickle")
    try:
        with os.fdopen(descriptor, "wb") as f:
            pickle.dump(stages, f)
        yield path
    finally:
        os.remove(path)


def _transform_with_pass_stages(shard: Shard, output_dir: str, batch_size: int, sidecar: SidecarFactory | None) -> Record:
    return transform(shard, output_dir, _pass_stages, batch_size, sidecar)


@dataclass
class LocalRunner:
    """Units in this process (``workers=1``) or in the process's kept pool of ``workers`` spawned processes.

    Image passes whose stages hold a model (``uses_model``) run in this process
    by default (``model_workers=1``): one model whose torch threads use every
    core is faster on a CPU than two copies competing for them.
    """

    workers: int = 1
    batch_size: int = 256
    show_progress: bool = True
    model_workers: int = 1

    def map(
        self,
        units: Sequence[Unit],
        process: Callable[[Unit], Record],
        *,
        output_dir: str,
        name_of: Callable[[Unit], str] = str,
        description: str = "work",
        workers: int | None = None,
    ) -> dict[str, Record]:
        return self._map(units, process, output_dir, name_of, description,
                         self.workers if workers is None else workers, stages=None)

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
        process = functools.partial(
            _transform_with_pass_stages, output_dir=output_dir, batch_size=self.batch_size, sidecar=sidecar
        )
        return self._map(shards, process, output_dir, shard_name, description or ", ".join(s.name for s in stages) or "copy",
                         self.model_workers if uses_model else self.workers, stages=list(stages))

    def _map(self, units: Sequence[Unit], process: Callable[[Unit], Record], output_dir: str,
             name_of: Callable[[Unit], str], description: str, workers: int,
             stages: list[Stage] | None) -> dict[str, Record]:
        """One pass: ``process`` over the unfinished units, here or in the pool; ``stages`` (an image pass) are
        set up where the units run, before the first one."""
        records, pending = split_finished(units, output_dir, name_of)
        pass_id = uuid.uuid4().hex
        errors: list[BaseException] = []
        with progress_bar(disable=not self.show_progress) as progress:
            task = progress.add_task(description, total=len(units), completed=len(records))
            if workers <= 1 or len(pending) <= 1:
                if pending and stages is not None:
                    _use_pass(pass_id, stages)
                for unit in pending:
                    records[name_of(unit)] = run_unit(process, unit, output_dir, name_of(unit))
                    progress.advance(task)
            else:
                def done(name: str, outcome: Record | BaseException) -> None:
                    if isinstance(outcome, BaseException):  # surfaced after the other units are done
                        errors.append(outcome)
                    else:
                        records[name] = outcome
                    progress.advance(task)

                with _stages_file(stages) as stages_file:
                    calls = {name_of(unit): (_pool_task, pass_id, stages_file, process, unit, output_dir, name_of(unit))
                             for unit in pending}
                    _run_in_pool(workers, calls, done)
        if errors and isinstance(errors[0], BrokenProcessPool):
            raise BrokenProcessPool(
                f"{description}: a worker process died (killed, or out of memory?); {len(units) - len(records)} "
                f"unit(s) did not finish and have no done marker: run again to resume") from errors[0]
        if errors:
            raise errors[0]
        return finish(units, records, output_dir, name_of)


def _run_in_pool(workers: int, calls: dict[str, tuple[Any, ...]],
                 done: Callable[[str, Record | BaseException], None]) -> None:
    """Submit ``calls`` (function and arguments, by unit name) to the kept pool of ``workers`` processes and hand
    each outcome (a record or the unit's error) to ``done`` as it comes. A pool that broke (a worker died) or was
    left mid-pass (an interrupt) is ended, so the next pass starts on new workers."""

    def submit_all(pool: ProcessPoolExecutor) -> dict[Future[Record], str]:
        return {pool.submit(*call): name for name, call in calls.items()}

    try:
        futures = submit_all(worker_pool(workers))
    except BrokenProcessPool:  # a kept worker died between passes
        shutdown_pools(workers)
        futures = submit_all(worker_pool(workers))
    broken, finished = False, False
    try:
        for future in as_completed(futures):
            error = future.exception()
            broken = broken or isinstance(error, BrokenProcessPool)
            done(futures[future], future.result() if error is None else error)
        finished = True
    finally:
        if broken or not finished:
            shutdown_pools(workers)
