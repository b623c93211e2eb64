"""The recipe-driven builder: every constituent through the same stages into one Hub-layout folder.

Data flow per constituent (streaming, one batch of conversations at a time)::

    source records -> template -> [PII scrub -> quality -> dedup signatures] -> decontaminate -> dedup -> parquet
                                  (process pool, results in submission order)  (main process, stateful)

PII scrubbing, quality scoring (the slowest stage) and MinHash signing are
per-row and stateless, so with ``workers > 1`` they run in a process pool over
batches (results consumed in submission order, so the output does not depend
on the number of workers); the dedup index must see rows in build order and
decontamination is a set lookup, so both stay in the main process.

Output, in the layout the Hub and ``datasets`` load without a script::

    OUTPUT/README.md                             card with YAML `configs:` (all = every constituent)
    OUTPUT/<constituent>/train-00000-of-00001.parquet
    OUTPUT/moderation/train-00000-of-00001.parquet
    OUTPUT/removed/<constituent>.parquet         removed rows: id, reason, duplicate_of (kept member), text
    OUTPUT/.build/.laion-hf/done/<constituent>.json  per-constituent done markers (stats), for resuming

Every file is written atomically; a constituent with a done marker is not
rebuilt (its kept rows re-seed the dedup index, so a resumed build equals an
uninterrupted one). Nothing time- or machine-dependent enters the dataset files,
so two builds of one recipe are byte-for-byte identical.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.io.atomic import atomic_path, join, mark_done, read_done, remove_stale_temporaries
from laion_hf.stages.base import DROP_REASON, StageStats, alive_mask, split_kept
from oig.card import render_card
from oig.decontaminate import BenchmarkIndex, Decontaminator
from oig.dedup import DUPLICATE_OF, Deduplicator, Signer
from oig.moderation import ModerationTemplate
from oig.pii import PiiScrubber
from oig.quality import QualityScorer, QualityThresholds
from oig.recipe import ConstituentSpec, Recipe
from oig.render import Template
from oig.schema import OUTPUT_SCHEMA, format_text, to_output, work_table
from oig.sources import iter_records

STATE_DIR = ".build"
REMOVED_DIR = "removed"
REMOVED_SCHEMA = pa.schema(
    [("id", pa.string()), ("constituent", pa.string()), (DROP_REASON, pa.string()),
     (DUPLICATE_OF, pa.string()), ("text", pa.string())]
)
STAGE_ORDER = ("pii", "quality", "decontaminate", "dedup")


def data_file(config: str) -> str:
    """The Hub-layout path of a config's (single) data file, relative to the dataset root."""
    return f"{config}/train-00000-of-00001.parquet"


@dataclass
class ConstituentReport:
    """What one constituent's build did: records read, conversations made, per-stage counts, PII and flags."""

    name: str
    description: str = ""
    records: int = 0
    conversations: int = 0
    stages: dict[str, StageStats] = field(default_factory=dict)
    pii: Counter[str] = field(default_factory=Counter)
    flags: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def kept(self) -> int:
        return self.stages["dedup"].kept if "dedup" in self.stages else 0

    def overall(self) -> StageStats:
        """Conversations in, kept and removed by reason over all stages (the row of a summary table)."""
        total = StageStats(stage=self.name, rows_in=self.conversations, kept=self.kept, seconds=self.seconds)
        for stats in self.stages.values():
            total.dropped.update(stats.dropped)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "records": self.records,
            "conversations": self.conversations,
            "stages": [self.stages[s].to_dict() for s in STAGE_ORDER],
            "pii": dict(sorted(self.pii.items())),
            "flags": dict(sorted(self.flags.items())),
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConstituentReport:
        return cls(
            name=data["name"],
            description=data.get("description", ""),
            records=data["records"],
            conversations=data["conversations"],
            stages={s["stage"]: StageStats.from_dict(s) for s in data["stages"]},
            pii=Counter(data.get("pii", {})),
            flags=Counter(data.get("flags", {})),
            seconds=data.get("seconds", 0.0),
        )


@dataclass
class BuildReport:
    output: str
    constituents: list[ConstituentReport]
    moderation: ConstituentReport | None

    def all_reports(self) -> list[ConstituentReport]:
        return [*self.constituents, *([self.moderation] if self.moderation else [])]

    def stage_totals(self) -> list[StageStats]:
        """Each stage's counts summed over every constituent (moderation included)."""
        totals = {name: StageStats(stage=name) for name in STAGE_ORDER}
        for report in self.all_reports():
            for name in STAGE_ORDER:
                totals[name].merge(report.stages[name])
        return [totals[name] for name in STAGE_ORDER]


# ---- the stateless part, run in-process or in pool workers -------------------------------------------

_WORKER_SCORERS: dict[QualityThresholds, QualityScorer] = {}


def score_batch(
    batch: pa.Table, thresholds: QualityThresholds, pii: bool, signer: Signer
) -> tuple[pa.Table, list[StageStats], float]:
    """PII-scrub, quality-score and dedup-sign one batch: the stateless, per-row work the pool shares.

    Returns the batch, the pii and quality stage counts, and the signing seconds
    (counted as dedup time). Scorers (language model, CMUdict) load once per process.
    """
    scorer = _WORKER_SCORERS.get(thresholds)
    if scorer is None:
        scorer = _WORKER_SCORERS[thresholds] = QualityScorer(thresholds)
        scorer.setup()
    stats = []
    if pii:
        batch, pii_stats = run_stage(PiiScrubber(), batch)
    else:
        live = sum(alive_mask(batch).to_pylist())
        pii_stats = StageStats(stage="pii", rows_in=live, kept=live)
    stats.append(pii_stats)
    batch, quality_stats = run_stage(scorer, batch)
    stats.append(quality_stats)
    started = time.perf_counter()
    batch = signer(batch)
    return batch, stats, time.perf_counter() - started


def run_stage(stage: Callable[[pa.Table], pa.Table], batch: pa.Table) -> tuple[pa.Table, StageStats]:
    """Apply a stage and count what it did: live rows in, still live after, newly dropped by reason."""
    started = time.perf_counter()
    before = alive_mask(batch).to_pylist()
    batch = stage(batch)
    after = alive_mask(batch).to_pylist()
    reasons = batch[DROP_REASON].to_pylist() if DROP_REASON in batch.column_names else [None] * batch.num_rows
    dropped = Counter(reason for was, now, reason in zip(before, after, reasons, strict=True) if was and not now)
    stats = StageStats(stage=stage.name, rows_in=sum(before), kept=sum(after), dropped=dropped)
    stats.seconds = time.perf_counter() - started
    return batch, stats


def ordered_map(
    fn: Callable[..., Any], items: Iterable[Any], *args: Any, pool: ProcessPoolExecutor | None = None, window_size: int = 4
) -> Iterator[Any]:
    """``fn(item, *args)`` for each item, in order; with a pool, up to ``window_size`` items run at once."""
    if pool is None:
        for item in items:
            yield fn(item, *args)
        return
    window: deque[Future] = deque()
    for item in items:
        window.append(pool.submit(fn, item, *args))
        if len(window) >= window_size:
            yield window.popleft().result()
    while window:
        yield window.popleft().result()


# ---- the builder ---------------------------------------------------------------------------------------


class Builder:
    """Build every config of a recipe into ``output``; :meth:`run` returns the :class:`BuildReport`."""

    def __init__(self, recipe: Recipe, output: str, *, workers: int = 1, on_rows: Callable[[str, int], None] | None = None):
        self.recipe = recipe
        self.output = str(output)
        self.workers = workers
        self.on_rows = on_rows or (lambda name, rows: None)
        dedup = recipe.dedup
        self._dedup_options = {
            "near": bool(dedup.get("near", True)),
            "threshold": float(dedup.get("threshold", 0.8)),
            "num_perm": int(dedup.get("num_perm", 128)),
            "shingle_size": int(dedup.get("shingle_size", 5)),
        }
        self._global_scope = dedup.get("scope", "global") == "global"
        decontaminate = recipe.decontaminate
        if decontaminate and decontaminate.get("benchmarks"):
            index = BenchmarkIndex.from_sources(decontaminate["benchmarks"], int(decontaminate.get("n", 13)), recipe.base_dir)
            self.decontaminator: Decontaminator | None = Decontaminator(index, str(decontaminate.get("action", "drop")))
        else:
            self.decontaminator = None

    def run(self) -> BuildReport:
        pool = ProcessPoolExecutor(max_workers=self.workers) if self.workers > 1 else None
        try:
            return self._run(pool)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    def _run(self, pool: ProcessPoolExecutor | None) -> BuildReport:
        configs = [c.name for c in self.recipe.constituents] + (["moderation"] if self.recipe.moderation else [])
        for folder in ["", STATE_DIR, REMOVED_DIR, *configs]:  # what a killed build left half-written
            remove_stale_temporaries(join(self.output, folder) if folder else self.output)
        shared = Deduplicator(**self._dedup_options)
        reports = []
        for spec in self.recipe.constituents:
            dedup = shared if self._global_scope else Deduplicator(**self._dedup_options)
            template = Template.load(spec.template, self.recipe.base_dir)
            records = _Counted(iter_records(spec.source, self.recipe.base_dir))
            rows = self._conversations(spec, template, records)
            reports.append(self._constituent(spec, template.description, records, rows, dedup, pool))
        moderation = None
        if self.recipe.moderation is not None:
            spec = self.recipe.moderation
            template = ModerationTemplate.load(spec.template, self.recipe.base_dir)
            records = _Counted(iter_records(spec.source, self.recipe.base_dir))
            rows = self._moderation_rows(spec, template, records)
            dedup = Deduplicator(**self._dedup_options)
            moderation = self._constituent(spec, template.description, records, rows, dedup, pool)
        report = BuildReport(output=self.output, constituents=reports, moderation=moderation)
        with atomic_path(join(self.output, "README.md")) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(render_card(self.recipe, report, self.output))
        return report

    def _conversations(self, spec: ConstituentSpec, template: Template, records: Iterable) -> Iterator[dict[str, Any]]:
        for index, conversation in enumerate(template.render(records, self.recipe.seed)):
            yield self._row(spec, index, conversation.messages, conversation.template_id)

    def _moderation_rows(self, spec: ConstituentSpec, template: ModerationTemplate, records: Iterable) -> Iterator[dict[str, Any]]:
        for index, (conversation, label, tags) in enumerate(template.render(records)):
            row = self._row(spec, index, conversation.messages, conversation.template_id)
            yield row | {"moderation_label": label, "moderation_tags": tags}

    def _row(self, spec: ConstituentSpec, index: int, messages: list[dict[str, str]], template_id: str) -> dict[str, Any]:
        return {
            "id": f"{spec.name}-{index:08d}",
            "text": format_text(messages),
            "messages": messages,
            "source": str(spec.source.get("path")),
            "constituent": spec.name,
            "template_id": template_id,
            "seed": self.recipe.seed,
            "flags": [],
            "pii_replaced": 0,
            "moderation_label": None,
            "moderation_tags": [],
        }

    def _constituent(
        self,
        spec: ConstituentSpec,
        description: str,
        records: _Counted,
        rows: Iterator[dict[str, Any]],
        dedup: Deduplicator,
        pool: ProcessPoolExecutor | None,
    ) -> ConstituentReport:
        state_dir = join(self.output, STATE_DIR)
        recorded = read_done(state_dir, spec.name)
        if recorded is not None:
            self._reindex(spec.name, dedup)
            return ConstituentReport.from_dict(recorded)
        started = time.perf_counter()
        report = ConstituentReport(name=spec.name, description=description, stages={s: StageStats(stage=s) for s in STAGE_ORDER})

        def batches() -> Iterator[pa.Table]:
            while chunk := list(islice(rows, self.recipe.batch_size)):
                yield work_table(chunk)

        data_path = join(self.output, data_file(spec.name))
        removed_path = join(self.output, REMOVED_DIR, f"{spec.name}.parquet")
        with atomic_path(data_path) as data_tmp, atomic_path(removed_path) as removed_tmp:
            with pq.ParquetWriter(data_tmp, OUTPUT_SCHEMA) as kept_writer, pq.ParquetWriter(removed_tmp, REMOVED_SCHEMA) as removed_writer:
                scored = ordered_map(
                    score_batch, batches(), spec.quality, self.recipe.pii, dedup.signer, pool=pool, window_size=2 * self.workers
                )
                for batch, stats, signing_seconds in scored:
                    report.stages["dedup"].seconds += signing_seconds
                    main_stages = [s for s in (self.decontaminator, dedup) if s is not None]
                    for stage in main_stages:
                        batch, stage_stats = run_stage(stage, batch)
                        stats.append(stage_stats)
                    if self.decontaminator is None:
                        stats.insert(2, StageStats(stage="decontaminate", rows_in=stats[1].kept, kept=stats[1].kept))
                    for stage_stats in stats:
                        report.stages[stage_stats.stage].merge(stage_stats)
                    report.conversations += batch.num_rows
                    self._count_flags(batch, report)
                    kept, removed = split_kept(batch)
                    kept_writer.write_table(to_output(kept))
                    removed_writer.write_table(_removed_rows(removed))
                    self.on_rows(spec.name, batch.num_rows)
        report.records = records.count
        report.seconds = time.perf_counter() - started
        for stats in report.stages.values():
            stats.check()
        mark_done(state_dir, spec.name, report.to_dict())
        return report

    @staticmethod
    def _count_flags(batch: pa.Table, report: ConstituentReport) -> None:
        alive = alive_mask(batch).to_pylist()
        for live, flags, replaced in zip(alive, batch["flags"].to_pylist(), batch["pii_replaced"].to_pylist(), strict=True):
            for flag in flags or []:
                if flag.startswith("pii:"):
                    report.pii[flag[4:]] += 1
                elif live:
                    report.flags[flag] += 1
            report.pii["values_replaced"] += replaced or 0

    def _reindex(self, name: str, dedup: Deduplicator) -> None:
        """Feed a finished constituent's kept rows to the dedup index (resume = uninterrupted run)."""
        parquet = pq.ParquetFile(join(self.output, data_file(name)))
        for batch in parquet.iter_batches(columns=["text", "metadata"]):
            for text, metadata in zip(batch["text"].to_pylist(), batch["metadata"].to_pylist(), strict=True):
                dedup.add(metadata["id"], text)


class _Counted:
    """An iterator that counts the records it has handed out (records read, for the report)."""

    def __init__(self, items: Iterable[Any]):
        self._items = iter(items)
        self.count = 0

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> Any:
        item = next(self._items)
        self.count += 1
        return item


def _removed_rows(removed: pa.Table) -> pa.Table:
    columns = {name: removed[name] if name in removed.column_names else pa.nulls(removed.num_rows, REMOVED_SCHEMA.field(name).type) for name in REMOVED_SCHEMA.names}
    return pa.Table.from_pydict(columns, schema=REMOVED_SCHEMA)


def build(recipe: str | Path | Recipe, output: str, *, workers: int = 1, on_rows: Callable[[str, int], None] | None = None) -> BuildReport:
    """Build every config of ``recipe`` into the Hub-layout folder ``output``; resumes an interrupted build."""
    if not isinstance(recipe, Recipe):
        recipe = Recipe.load(recipe)
    return Builder(recipe, output, workers=workers, on_rows=on_rows).run()
