"""What every stage shares: a batch-in/batch-out contract and counts that add up.

A stage is a callable from a ``pyarrow.Table`` batch to a ``pyarrow.Table``
batch, so any runner can call it on any slice of a shard.
Stages that filter do not drop rows: they *mark* them in the ``drop_reason``
column (first reason wins) and later stages skip marked rows. The runner then
splits kept from removed once, at the shard boundary, so the counts by reason
come from the data itself, and ``rows in = kept + removed`` can be checked,
not assumed, on one machine and on Ray alike. A stage therefore never drops,
adds or reorders rows; it only adds or fills columns.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

DROP_REASON = "drop_reason"


class Stage:
    """A named batch transform. Subclasses load models in :meth:`setup` (once per worker)."""

    name: str = "stage"

    def setup(self) -> None:
        """Load what the stage needs (models, lists); called once per worker before any batch."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError


def ensure_drop_reason(batch: pa.Table) -> pa.Table:
    """Add an all-null ``drop_reason`` column if the batch has none yet."""
    if DROP_REASON in batch.column_names:
        return batch
    return batch.append_column(DROP_REASON, pa.nulls(batch.num_rows, pa.string()))


def alive_mask(batch: pa.Table) -> pa.ChunkedArray | pa.Array:
    """True for rows no earlier stage has dropped."""
    if DROP_REASON not in batch.column_names:
        return pa.array([True] * batch.num_rows)
    return pc.is_null(batch[DROP_REASON])


def mark_dropped(batch: pa.Table, mask: pa.Array | pa.ChunkedArray, reason: str) -> pa.Table:
    """Set ``drop_reason`` to ``reason`` where ``mask`` is true and no reason is set yet.

    A null in ``mask`` counts as false: only an explicit decision drops a row.
    """
    batch = ensure_drop_reason(batch)
    current = batch[DROP_REASON]
    hit = pc.and_(pc.fill_null(mask, False), pc.is_null(current))
    updated = pc.if_else(hit, pa.scalar(reason, pa.string()), current)
    index = batch.column_names.index(DROP_REASON)
    return batch.set_column(index, DROP_REASON, updated)


def split_kept(batch: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Split a marked batch into (kept rows, removed rows); kept rows lose the marker column."""
    if DROP_REASON not in batch.column_names:
        return batch, batch.schema.empty_table().append_column(DROP_REASON, pa.array([], pa.string()))
    alive = pc.is_null(batch[DROP_REASON])
    kept = batch.filter(alive).drop_columns([DROP_REASON])
    removed = batch.filter(pc.invert(alive))
    return kept, removed


def count_reasons(removed: pa.Table) -> Counter[str]:
    """Rows per drop reason in a table of removed rows."""
    if removed.num_rows == 0:
        return Counter()
    counts = pc.value_counts(removed[DROP_REASON])
    return Counter({row["values"]: row["counts"] for row in counts.to_pylist()})


@dataclass
class StageStats:
    """Rows in, kept and dropped by reason for one stage (over a shard, or merged over a run)."""

    stage: str
    rows_in: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def removed(self) -> int:
        return sum(self.dropped.values())

    def add_batch(self, rows_in: int, kept: int, dropped: Counter[str]) -> None:
        self.rows_in += rows_in
        self.kept += kept
        self.dropped.update(dropped)

    def merge(self, other: StageStats) -> StageStats:
        self.rows_in += other.rows_in
        self.kept += other.kept
        self.dropped.update(other.dropped)
        self.seconds += other.seconds
        return self

    def timed(self, seconds: float) -> StageStats:
        """A plain copy whose time is ``seconds``: a whole-run step (extract, download, dedup) is timed as
        the user waits for it, where an image pass sums each stage's batch times."""
        return StageStats(self.stage, self.rows_in, self.kept, Counter(self.dropped), seconds)

    def check(self) -> None:
        """Raise if the rows do not add up (``rows_in == kept + removed``)."""
        if self.rows_in != self.kept + self.removed:
            raise AssertionError(
                f"{self.stage}: counts do not add up: {self.rows_in} in != "
                f"{self.kept} kept + {self.removed} removed {dict(self.dropped)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "rows_in": self.rows_in,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageStats:
        return cls(
            stage=data["stage"],
            rows_in=data["rows_in"],
            kept=data["kept"],
            dropped=Counter(data.get("dropped", {})),
            seconds=data.get("seconds", 0.0),
        )
