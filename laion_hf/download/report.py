"""The run's account: rows in = successes + failures by reason (opt-outs among them), summed from the done markers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from laion_hf.core.stage import StageStats
from laion_hf.download.options import DownloadError
from laion_hf.io.atomic import join, read_done, write_json
from laion_hf.io.shards import discover_shards

REPORT_FILE = "download_report.json"


@dataclass
class DownloadReport(StageStats):
    """Rows in = successes + failures by reason, over every shard of the output, plus where it is."""

    output_dir: str = ""
    shards: list[str] = field(default_factory=list)
    processed: int = 0  # rows this call handled: every candidate, or the retried failures
    opted_out: dict[str, int] = field(default_factory=dict)  # rows whose site opted out, by reason (among the failures)

    @property
    def success_rate(self) -> float:
        return self.kept / self.rows_in if self.rows_in else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "success_rate": round(self.success_rate, 4),
            "output_dir": self.output_dir,
            "shards": self.shards,
            "processed": self.processed,
            "opted_out": dict(sorted(self.opted_out.items())),
        }


def write_report(output_dir: str, processed: int, seconds: float) -> DownloadReport:
    """Sum the done markers of ``output_dir`` into ``download_report.json``; every shard must be finished."""
    shards = discover_shards(output_dir)
    report = DownloadReport("download", output_dir=output_dir, shards=[s.name for s in shards], processed=processed)
    for shard in shards:
        recorded = read_done(output_dir, shard.name)
        if recorded is None:
            raise DownloadError(f"{shard.parquet}: shard is not finished; re-run the download to resume")
        report.merge(StageStats.from_dict(recorded["stages"][0]))
        for reason, count in recorded.get("opted_out", {}).items():
            report.opted_out[reason] = report.opted_out.get(reason, 0) + count
    report.check()
    report.seconds = seconds  # wall clock of this call
    write_json(join(output_dir, REPORT_FILE), report.to_dict())
    return report
