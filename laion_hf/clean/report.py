"""The clean report: per-shard and per-reason counts whose invariant is checked, not assumed.

``clean_report.json`` is written to OUTPUT after every shard is done. Its
totals are the sum of the shards' recorded stats (from the done markers, so a
resumed run reports exactly what an uninterrupted one would), and
``rows in = kept + removed`` is verified per shard and overall.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from laion_hf.core.stage import StageStats
from laion_hf.io.atomic import join, write_json

REPORT_NAME = "clean_report.json"


@dataclass
class CleanReport:
    """What a clean run did: options, removal lists read, and counts per shard and reason."""

    input_dir: str
    output_dir: str
    options: dict[str, Any]
    shards: list[dict[str, Any]]
    removal_lists: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The LAION metadata cleaned in the same run (``--metadata-output``), with its own report there.
    metadata: CleanReport | None = None

    @property
    def shard_stats(self) -> list[StageStats]:
        return [StageStats.from_dict(shard) for shard in self.shards]

    @property
    def total(self) -> StageStats:
        total = StageStats("total")
        for stats in self.shard_stats:
            total.merge(stats)
        return total

    @property
    def by_reason(self) -> Counter[str]:
        return self.total.dropped

    @property
    def image_hash_sources(self) -> dict[str, list[str]]:
        """Distinct sources of image digests per algorithm over all shards (sidecar vs tar bytes)."""
        sources: dict[str, set[str]] = {}
        for shard in self.shards:
            for alg, source in (shard.get("image_hash_source") or {}).items():
                sources.setdefault(alg, set()).add(source)
        return {alg: sorted(found) for alg, found in sources.items()}

    def check(self) -> None:
        """Raise AssertionError unless every shard and the total satisfy rows in = kept + removed."""
        for stats in self.shard_stats:
            stats.check()
        self.total.check()
        for shard in self.shards:
            tar = shard.get("tar")
            if tar is not None and tar["kept"] > shard["kept"]:
                raise AssertionError(f"{shard['stage']}: tar kept {tar['kept']} samples but parquet kept {shard['kept']}")

    def to_dict(self) -> dict[str, Any]:
        total = self.total
        return {
            "input": self.input_dir,
            "output": self.output_dir,
            "options": self.options,
            "removal_lists": self.removal_lists,
            "notes": self.notes,
            "image_hash_source": self.image_hash_sources,
            "total": {**total.to_dict(), "removed": total.removed},
            "by_reason": dict(sorted(self.by_reason.items())),
            "invariant": "rows_in == kept + removed (checked per shard and in total)",
            "shards": self.shards,
            **({"metadata": self.metadata.summary()} if self.metadata is not None else {}),
        }

    def summary(self) -> dict[str, Any]:
        """Where the output is and its counts (how a download's report refers to its metadata's)."""
        total = self.total
        return {
            "input": self.input_dir,
            "output": self.output_dir,
            "report": join(self.output_dir, REPORT_NAME),
            "total": {"rows_in": total.rows_in, "kept": total.kept, "removed": total.removed},
            "by_reason": dict(sorted(self.by_reason.items())),
        }

    def write(self) -> str:
        path = join(self.output_dir, REPORT_NAME)
        write_json(path, self.to_dict())
        return path
