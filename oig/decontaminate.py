"""Benchmark decontamination: drop (or flag) rows sharing a word n-gram (13 by default) with a test set.

OIG was never checked against the benchmarks its users evaluated on. Here a
recipe lists benchmark test files (any format :mod:`oig.sources` reads) and the
fields to index; every word n-gram of those fields is hashed into a set (the
GPT-3 / FLAN style 13-gram check), and a row whose text contains any of them is
``contaminated``: dropped, or kept with a ``contaminated`` flag. Benchmark items
shorter than ``n`` words cannot match and are counted as ``too_short_to_index``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import mmh3
import pyarrow as pa

from laion_hf.core.errors import UserError
from laion_hf.core.stage import Stage, alive_mask, mark_dropped
from oig.dedup import normalise
from oig.sources import iter_records

ACTIONS = ("drop", "flag")


def ngram_hashes(text: str, n: int) -> set[int]:
    tokens = normalise(text).split()
    return {mmh3.hash64(" ".join(tokens[i : i + n]))[0] for i in range(len(tokens) - n + 1)}


class BenchmarkIndex:
    """The n-gram hashes of benchmark texts, and how many items were indexed or too short."""

    def __init__(self, n: int = 13):
        self.n = n
        self.hashes: set[int] = set()
        self.counts: Counter[str] = Counter()

    def add(self, text: str) -> None:
        grams = ngram_hashes(text, self.n)
        self.counts["indexed" if grams else "too_short_to_index"] += 1
        self.hashes |= grams

    @classmethod
    def from_sources(cls, specs: Iterable[Mapping[str, Any]], n: int = 13, base_dir: Path | None = None):
        """Index the ``fields`` of every record of every benchmark source spec."""
        index = cls(n)
        for spec in specs:
            text_fields = spec.get("text_fields")
            if not text_fields:
                raise UserError(f"benchmark {spec.get('path')}: list the fields to index under `text_fields:`")
            for record in iter_records({k: v for k, v in spec.items() if k != "text_fields"}, base_dir):
                for name in text_fields:
                    if name not in record:
                        raise UserError(f"benchmark {spec['path']}: record has no field {name!r}")
                    if record[name]:
                        index.add(str(record[name]))
        return index

    def contaminated(self, text: str) -> bool:
        return not self.hashes.isdisjoint(ngram_hashes(text, self.n))


class Decontaminator(Stage):
    """Mark (``action="drop"``) or flag (``action="flag"``) live rows overlapping the benchmark index."""

    name = "decontaminate"

    def __init__(self, index: BenchmarkIndex, action: str = "drop"):
        if action not in ACTIONS:
            raise UserError(f"decontaminate: action must be one of {ACTIONS}, not {action!r}")
        self.index = index
        self.action = action

    def __call__(self, batch: pa.Table) -> pa.Table:
        alive = alive_mask(batch).to_pylist()
        hits = [live and self.index.contaminated(text) for live, text in zip(alive, batch["text"].to_pylist(), strict=True)]
        if self.action == "drop":
            return mark_dropped(batch, pa.array(hits), "contaminated")
        flags = [
            [*(existing or []), "contaminated"] if hit else existing
            for hit, existing in zip(hits, batch["flags"].to_pylist(), strict=True)
        ]
        index = batch.column_names.index("flags")
        return batch.set_column(index, batch.schema.field("flags"), pa.array(flags, batch.schema.field("flags").type))
