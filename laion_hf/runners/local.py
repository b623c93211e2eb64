"""The default runner: units in this process, or across a local pool of worker processes.

See :mod:`laion_hf.runners.base` for what every runner guarantees (resume by
done markers, records, errors after the other units). Workers start as fresh
interpreters, never as forks of this process: a fork inherits the locks of this
process's thread pools (torch's OpenMP team once any model ran here), and a
worker that runs torch then waits forever. (Not "forkserver": its server keeps
the environment of its first use; spawn takes the current one.) A script that
uses more than one worker therefore needs the ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from laion_hf.core.stage import Stage
from laion_hf.io.samples import SidecarFactory
from laion_hf.io.shards import Shard
from laion_hf.runners.base import Record, Unit, finish, progress_bar, run_unit, shard_name, split_finished, transform

START_METHOD = "spawn"

_worker_stages: list[Stage] = []  # a pool worker's stages, set up once by _set_up_stages


def _set_up_stages(stages: Sequence[Stage]) -> None:
    """Pool initializer: load the stages' models once per worker process."""
    global _worker_stages
    for stage in stages:
        stage.setup()
    _worker_stages = list(stages)


def _transform_in_worker(shard: Shard, output_dir: str, batch_size: int, sidecar: SidecarFactory | None) -> Record:
    return transform(shard, output_dir, _worker_stages, batch_size, sidecar)


@dataclass
class LocalRunner:
    """Units in this process (``workers=1``) or in a pool of ``workers`` spawned processes.

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
        initializer: Callable[..., None] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> dict[str, Record]:
        records, pending = split_finished(units, output_dir, name_of)
        workers = self.workers if workers is None else workers
        errors: list[BaseException] = []
        with progress_bar(disable=not self.show_progress) as progress:
            task = progress.add_task(description, total=len(units), completed=len(records))
            if workers <= 1 or len(pending) <= 1:
                if pending and initializer is not None:
                    initializer(*initargs)
                for unit in pending:
                    records[name_of(unit)] = run_unit(process, unit, output_dir, name_of(unit))
                    progress.advance(task)
            else:
                context = multiprocessing.get_context(START_METHOD)
                with ProcessPoolExecutor(workers, mp_context=context, initializer=initializer, initargs=initargs) as pool:
                    futures = {
                        pool.submit(run_unit, process, unit, output_dir, name_of(unit)): unit for unit in pending
                    }
                    for future in as_completed(futures):
                        try:
                            records[name_of(futures[future])] = future.result()
                        except BaseException as exc:  # surfaced after the other units are done
                            errors.append(exc)
                        progress.advance(task)
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
        process = functools.partial(
            _transform_in_worker, output_dir=output_dir, batch_size=self.batch_size, sidecar=sidecar
        )
        return self.map(
            shards,
            process,
            output_dir=output_dir,
            name_of=shard_name,
            description=description or ", ".join(s.name for s in stages) or "copy",
            workers=self.model_workers if uses_model else self.workers,
            initializer=_set_up_stages,
            initargs=(list(stages),),
        )
