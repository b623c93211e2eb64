"""The default runner: shards in this process, or across a local process pool.

A runner schedules; it holds no dataset logic. Each shard is processed by a
function that writes its outputs atomically and returns its stats; the runner
then writes the shard's done marker (carrying those stats). On a re-run,
shards with a marker are skipped and their recorded stats reused, so a resumed
run reports the same totals as an uninterrupted one. Once every shard is done,
the folder's README.md names its data files (:mod:`laion_hf.io.data_card`).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from laion_hf.io.atomic import mark_done, read_done, remove_stale_temporaries
from laion_hf.io.data_card import write_data_card

ShardT = TypeVar("ShardT")
ShardStats = dict[str, Any]
#: Workers start as fresh interpreters, never as forks of this process: a fork inherits the locks of this
#: process's thread pools (torch's OpenMP team once any model ran here), and a worker that runs torch then waits
#: forever. (Not "forkserver": its server keeps the environment of its first use, spawn takes the current one.)
START_METHOD = "spawn"


def progress_bar(disable: bool = False) -> Progress:
    """The progress bar every long-running command shows (on stderr)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=disable,
    )


def run_shards(
    shards: Sequence[ShardT],
    process: Callable[[ShardT], ShardStats],
    *,
    output_dir: str,
    name_of: Callable[[ShardT], str],
    workers: int = 1,
    description: str = "shards",
    show_progress: bool = True,
) -> dict[str, ShardStats]:
    """Run ``process`` on every unfinished shard; return stats by shard name (finished ones included).

    ``process`` must be picklable when ``workers > 1`` (a module-level function or
    a ``functools.partial`` of one); workers start fresh (:data:`START_METHOD`),
    so a script that calls this needs the ``if __name__ == "__main__":`` guard. A shard whose ``process`` raises leaves no
    marker, and the first error is re-raised after the other shards finish.
    """
    remove_stale_temporaries(output_dir)
    results: dict[str, ShardStats] = {}
    pending: list[ShardT] = []
    for shard in shards:
        recorded = read_done(output_dir, name_of(shard))
        if recorded is None:
            pending.append(shard)
        else:
            results[name_of(shard)] = recorded

    errors: list[BaseException] = []

    def finish(shard: ShardT, stats: ShardStats) -> None:
        mark_done(output_dir, name_of(shard), stats)
        results[name_of(shard)] = stats

    with progress_bar(disable=not show_progress) as progress:
        task = progress.add_task(description, total=len(shards), completed=len(results))
        if workers <= 1 or len(pending) <= 1:
            for shard in pending:
                finish(shard, process(shard))
                progress.advance(task)
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(START_METHOD)) as pool:
                futures = {pool.submit(process, shard): shard for shard in pending}
                for future in as_completed(futures):
                    try:
                        finish(futures[future], future.result())
                    except BaseException as exc:  # surfaced after the other shards are done
                        errors.append(exc)
                    progress.advance(task)
    if errors:
        raise errors[0]
    write_data_card(output_dir)
    return {name_of(s): results[name_of(s)] for s in shards}
