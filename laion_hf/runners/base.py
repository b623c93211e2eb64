"""What every runner does the same way: skip finished units, mark each one done, show progress, add up counts.

A runner schedules; it holds no dataset logic. Steps hand it work in two shapes:

- ``map(units, process, output_dir=..., name_of=...)``: ``process(unit)`` writes
  its outputs atomically and returns a record (a JSON-able dict of stats); the
  runner writes the unit's done marker holding that record. On a re-run, units
  with a marker are skipped and their recorded stats reused, so a resumed run
  reports the same totals as an uninterrupted one. A unit whose ``process``
  raises leaves no marker; the first error is re-raised after the other units
  finish.
- ``map_stages(shards, stages, output_dir)``: an image pass, the same as a
  ``map`` of :func:`transform` over the shards, except that each worker sets the
  stages up (loads their models) once, not once per shard.

Both runners (:mod:`laion_hf.runners.local`, :mod:`laion_hf.runners.ray`) run the
same :func:`run_unit` / :func:`transform` on each unit, so their outputs are the
same files by construction; only where the call happens differs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from laion_hf.core.stage import Stage, StageStats
from laion_hf.io.atomic import mark_done, read_done, remove_stale_temporaries
from laion_hf.io.data_card import write_data_card
from laion_hf.io.samples import SidecarFactory, transform_shard
from laion_hf.io.shards import Shard

Unit = TypeVar("Unit")
Record = dict[str, Any]


class Runner(Protocol):
    """Where units of work run: this process, a local pool, or a Ray cluster."""

    def map(
        self,
        units: Sequence[Unit],
        process: Callable[[Unit], Record],
        *,
        output_dir: str,
        name_of: Callable[[Unit], str] = str,
        description: str = "work",
    ) -> dict[str, Record]:
        """Run ``process`` on every unfinished unit; records by unit name, in the order of ``units``."""
        ...

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
        """Run ``stages`` over every unfinished image shard into ``output_dir``; records by shard name."""
        ...


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


def split_finished(
    units: Sequence[Unit], output_dir: str, name_of: Callable[[Unit], str]
) -> tuple[dict[str, Record], list[Unit]]:
    """(records of the units already done, the units still to run); stale temporaries are removed first."""
    remove_stale_temporaries(output_dir)
    done: dict[str, Record] = {}
    pending: list[Unit] = []
    for unit in units:
        recorded = read_done(output_dir, name_of(unit))
        if recorded is None:
            pending.append(unit)
        else:
            done[name_of(unit)] = recorded
    return done, pending


def run_unit(process: Callable[[Unit], Record], unit: Unit, output_dir: str, name: str) -> Record:
    """Run one unit and write its done marker (after its outputs are in place)."""
    record = process(unit)
    mark_done(output_dir, name, record)
    return record


def finish(
    units: Sequence[Unit], records: dict[str, Record], output_dir: str, name_of: Callable[[Unit], str]
) -> dict[str, Record]:
    """The records in the order of ``units``, once all are done; the folder's README names its data files."""
    write_data_card(output_dir)
    return {name_of(unit): records[name_of(unit)] for unit in units}


def transform(
    shard: Shard, output_dir: str, stages: Sequence[Stage], batch_size: int, sidecar: SidecarFactory | None = None
) -> Record:
    """One image shard through ``stages`` (already set up) into ``output_dir``: the unit of every image pass."""
    extra = sidecar(output_dir, shard.name) if sidecar is not None else None
    return transform_shard(shard, output_dir, stages, batch_size, sidecar=extra)


def shard_name(shard: Shard) -> str:
    return shard.name


def stage_totals(records: dict[str, Record], stage_names: Sequence[str]) -> list[StageStats]:
    """Per-stage totals over the records of an image pass (as :func:`transform` returns them), checked."""
    totals = [StageStats(name) for name in stage_names]
    for record in records.values():
        for total, data in zip(totals, record["stages"]):
            total.merge(StageStats.from_dict(data))
    for total in totals:
        total.check()
    return totals
