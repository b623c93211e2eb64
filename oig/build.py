"""The recipe-driven builder: every constituent through the same stages into one Hub-layout folder.

Data flow per constituent (streaming, bounded memory)::

    source records -> [template -> PII scrub -> quality -> decontaminate -> dedup signatures] -> spool + dedup index
    (main: read,       (process pool over chunks of records, results in submission order)
     cut in chunks)
    dedup index -> resolve (per partition, in the pool) -> spool re-read -> mark duplicates -> parquet

Everything per row is stateless, so with ``workers > 1`` it runs in a process
pool over chunks of records (chunks end between ``group_by`` groups, so packing
sees whole groups; results are consumed in submission order, so the output does
not depend on the number of workers). The main process reads records, numbers
the conversations, appends signatures to the disk-backed dedup index
(:mod:`oig.dedup`) and spools the scored rows; once the constituent is read, the
index resolves duplicates partition by partition and the spool is re-read and
written out.

Output, in the layout the Hub and ``datasets`` load without a script::

    OUTPUT/README.md                             card with YAML `configs:` (all = every constituent)
    OUTPUT/<constituent>/train-00000-of-00001.parquet
    OUTPUT/moderation/train-00000-of-00001.parquet
    OUTPUT/removed/<constituent>.parquet         removed rows: id, reason, duplicate_of (kept member); no text
    OUTPUT/.audit/<constituent>.parquet          removed rows with their text: local only (`laion-hf push` never
                                                 uploads dot-folders), so decontamination never publishes a benchmark
    OUTPUT/.build/.laion-hf/done/<constituent>.json  per-constituent done markers (stats), for resuming
    OUTPUT/.build/dedup/<scope>/<constituent>/   the dedup index (signatures, partitions of kept rows)

Every file is written atomically; a constituent with a done marker (and a
complete dedup store) is not rebuilt, and its kept rows stay in the dedup index,
so a resumed build equals an uninterrupted one. Nothing time- or
machine-dependent enters the dataset files, so two builds of one recipe are
byte-for-byte identical.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.core.stage import DROP_REASON, StageStats, alive_mask, ensure_drop_reason, split_kept
from laion_hf.io.atomic import atomic_path, join, mark_done, read_done, remove_stale_temporaries
from oig.card import render_card
from oig.decontaminate import BenchmarkIndex, Decontaminator
from oig.dedup import DEDUP_KEY, DUPLICATE_OF, MINHASH, DedupOptions, DedupScope, DuplicateMarker, Signer
from oig.moderation import ModerationTemplate
from oig.pii import PiiScrubber
from oig.quality import QualityScorer, QualityThresholds
from oig.recipe import ConstituentSpec, Recipe
from oig.render import Template, group_key, template_path
from oig.schema import OUTPUT_SCHEMA, SCORED_SCHEMA, format_text, to_output, work_table
from oig.sources import SourceRecord, iter_records

STATE_DIR = ".build"
REMOVED_DIR = "removed"
AUDIT_DIR = ".audit"
REMOVED_SCHEMA = pa.schema(
    [("id", pa.string()), ("constituent", pa.string()), (DROP_REASON, pa.string()), (DUPLICATE_OF, pa.string())]
)
AUDIT_SCHEMA = pa.schema([*REMOVED_SCHEMA, ("text", pa.string())])
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


@dataclass(frozen=True)
class ChunkJob:
    """What a worker needs to turn a chunk of one constituent's records into scored, signed rows."""

    constituent: str
    template: str
    moderation: bool
    base_dir: Path
    source: str
    seed: int
    thresholds: QualityThresholds
    phone_regions: tuple[str, ...] | None
    signer: Signer


_WORKER_CACHE: dict[Any, Any] = {}
_DECONTAMINATOR: list[Decontaminator | None] = [None]


def install_decontaminator(decontaminator: Decontaminator | None) -> None:
    """Give this process the build's benchmark index (a pool initializer: sent once per worker, not per chunk)."""
    _DECONTAMINATOR[0] = decontaminator


def _cached(key: Any, make: Callable[[], Any]) -> Any:
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = make()
    return _WORKER_CACHE[key]


def process_chunk(records: list[SourceRecord], job: ChunkJob) -> tuple[pa.Table, list[StageStats], float, int]:
    """Template, PII-scrub, quality-score, decontaminate and dedup-sign one chunk of records.

    Returns the rows (ids left empty: the main process numbers them in order),
    the pii / quality / decontaminate counts, the signing seconds (counted as
    dedup time) and the number of records. Templates, scorers (language model,
    CMUdict) and the PII detector load once per process.
    """
    rows = work_table([_row(job, messages, template_id, label, tags) for messages, template_id, label, tags in _render(records, job)])
    stats = []
    if job.phone_regions is not None:
        scrubber = _cached(("pii", job.phone_regions), lambda: PiiScrubber(job.phone_regions))
        rows, pii_stats = run_stage(scrubber, rows)
    else:
        pii_stats = StageStats(stage="pii", rows_in=rows.num_rows, kept=rows.num_rows)
    stats.append(pii_stats)
    scorer = _cached(("quality", job.thresholds), lambda: QualityScorer(job.thresholds))
    rows, quality_stats = run_stage(scorer, rows)
    stats.append(quality_stats)
    if _DECONTAMINATOR[0] is not None:
        rows, decontaminate_stats = run_stage(_DECONTAMINATOR[0], rows)
    else:
        decontaminate_stats = StageStats(stage="decontaminate", rows_in=quality_stats.kept, kept=quality_stats.kept)
    stats.append(decontaminate_stats)
    rows = ensure_drop_reason(rows)
    scored = pa.Table.from_arrays([rows[name] for name in SCORED_SCHEMA.names], schema=SCORED_SCHEMA)
    started = time.perf_counter()
    signed = job.signer(scored)
    return signed, stats, time.perf_counter() - started, len(records)


def _render(records: list[SourceRecord], job: ChunkJob) -> Iterator[tuple[list[dict[str, str]], str, str | None, list[str]]]:
    path = template_path(job.template, job.base_dir)
    version = (path, path.stat().st_mtime_ns if path.exists() else None)  # an edited template is loaded again
    if job.moderation:
        template = _cached(("moderation", *version), lambda: ModerationTemplate.load(job.template, job.base_dir))
        for conversation, label, tags in template.render(records):
            yield conversation.messages, conversation.template_id, label, tags
    else:
        template = _cached(("template", *version), lambda: Template.load(job.template, job.base_dir))
        for conversation in template.render(records, job.seed):
            yield conversation.messages, conversation.template_id, None, []


def _row(job: ChunkJob, messages: list[dict[str, str]], template_id: str, label: str | None, tags: list[str]) -> dict[str, Any]:
    return {
        "id": "",
        "text": format_text(messages),
        "messages": messages,
        "source": job.source,
        "constituent": job.constituent,
        "template_id": template_id,
        "seed": job.seed,
        "flags": [],
        "pii_replaced": 0,
        "moderation_label": label,
        "moderation_tags": tags,
    }


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


def record_chunks(records: Iterable[SourceRecord], size: int, group_by: str | None, path: Path) -> Iterator[list[SourceRecord]]:
    """Records in chunks of about ``size``, cut only between ``group_by`` groups (packing needs whole groups)."""
    chunk: list[SourceRecord] = []
    for record in records:
        if len(chunk) >= size and (group_by is None or group_key(record, group_by, path) != group_key(chunk[-1], group_by, path)):
            yield chunk
            chunk = []
        chunk.append(record)
    if chunk:
        yield chunk


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
        self.dedup_options = DedupOptions(
            near=bool(dedup.get("near", True)),
            threshold=float(dedup.get("threshold", 0.8)),
            num_perm=int(dedup.get("num_perm", 128)),
            shingle_size=int(dedup.get("shingle_size", 5)),
        )
        self._global_scope = dedup.get("scope", "global") == "global"
        decontaminate = recipe.decontaminate
        if decontaminate and decontaminate.get("benchmarks"):
            index = BenchmarkIndex.from_sources(decontaminate["benchmarks"], int(decontaminate.get("n", 13)), recipe.base_dir)
            self.decontaminator: Decontaminator | None = Decontaminator(index, str(decontaminate.get("action", "drop")))
        else:
            self.decontaminator = None

    def run(self) -> BuildReport:
        install_decontaminator(self.decontaminator)
        pool = None
        if self.workers > 1:
            pool = ProcessPoolExecutor(self.workers, initializer=install_decontaminator, initargs=(self.decontaminator,))
        try:
            return self._run(pool)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    def _scope(self, name: str) -> DedupScope:
        return DedupScope(Path(self.output) / STATE_DIR / "dedup" / name, self.dedup_options)

    def _run(self, pool: ProcessPoolExecutor | None) -> BuildReport:
        configs = [c.name for c in self.recipe.constituents] + (["moderation"] if self.recipe.moderation else [])
        for folder in ["", STATE_DIR, REMOVED_DIR, AUDIT_DIR, *configs]:  # what a killed build left half-written
            remove_stale_temporaries(join(self.output, folder) if folder else self.output)
        shared = self._scope("global")
        reports = []
        for spec in self.recipe.constituents:
            scope = shared if self._global_scope else self._scope(spec.name)
            template = Template.load(spec.template, self.recipe.base_dir)
            reports.append(self._constituent(spec, template.description, template.group_by, False, scope, pool))
        moderation = None
        if self.recipe.moderation is not None:
            spec = self.recipe.moderation
            template = ModerationTemplate.load(spec.template, self.recipe.base_dir)
            moderation = self._constituent(spec, template.description, None, True, self._scope("moderation"), pool)
        report = BuildReport(output=self.output, constituents=reports, moderation=moderation)
        with atomic_path(join(self.output, "README.md")) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(render_card(self.recipe, report, self.output))
        return report

    def _constituent(
        self,
        spec: ConstituentSpec,
        description: str,
        group_by: str | None,
        moderation: bool,
        scope: DedupScope,
        pool: ProcessPoolExecutor | None,
    ) -> ConstituentReport:
        state_dir = join(self.output, STATE_DIR)
        recorded = read_done(state_dir, spec.name)
        if recorded is not None and scope.load(spec.name):
            return ConstituentReport.from_dict(recorded)
        started = time.perf_counter()
        report = ConstituentReport(name=spec.name, description=description, stages={s: StageStats(stage=s) for s in STAGE_ORDER})
        job = ChunkJob(
            constituent=spec.name,
            template=spec.template,
            moderation=moderation,
            base_dir=self.recipe.base_dir,
            source=str(spec.source.get("path")),
            seed=self.recipe.seed,
            thresholds=spec.quality,
            phone_regions=self.recipe.phone_regions,
            signer=scope.signer,
        )
        records = iter_records(spec.source, self.recipe.base_dir)
        chunks = record_chunks(records, self.recipe.batch_size, group_by, Path(spec.template))
        index = scope.open(spec.name)
        spool = Path(state_dir) / "spool" / f"{spec.name}.parquet"
        spool.parent.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(spool, SCORED_SCHEMA) as spool_writer:
            results = ordered_map(process_chunk, chunks, job, pool=pool, window_size=2 * self.workers)
            for batch, stats, signing_seconds, records_read in results:
                first = report.conversations
                ids = pa.array([f"{spec.name}-{i:08d}" for i in range(first, first + batch.num_rows)], pa.string())
                batch = batch.set_column(batch.column_names.index("id"), "id", ids)
                index.add(batch)
                spool_writer.write_table(batch.drop_columns([DEDUP_KEY, MINHASH]))
                for stage_stats in stats:
                    report.stages[stage_stats.stage].merge(stage_stats)
                report.stages["dedup"].seconds += signing_seconds
                report.conversations += batch.num_rows
                report.records += records_read
                self.on_rows(spec.name, batch.num_rows)
        resolving = time.perf_counter()
        decisions = index.resolve(pool.map if pool is not None else map)
        report.stages["dedup"].seconds += time.perf_counter() - resolving
        self._write(spec.name, spool, DuplicateMarker(decisions, scope, index), report)
        index.commit(decisions)
        spool.unlink()
        report.seconds = time.perf_counter() - started
        for stats in report.stages.values():
            stats.check()
        mark_done(state_dir, spec.name, report.to_dict())
        return report

    def _write(self, name: str, spool: Path, marker: DuplicateMarker, report: ConstituentReport) -> None:
        """Re-read the spooled rows in order, mark duplicates, write kept rows, the published removal list and the audit."""
        paths = (
            join(self.output, data_file(name)),
            join(self.output, REMOVED_DIR, f"{name}.parquet"),
            join(self.output, AUDIT_DIR, f"{name}.parquet"),
        )
        with atomic_path(paths[0]) as data_tmp, atomic_path(paths[1]) as removed_tmp, atomic_path(paths[2]) as audit_tmp:
            with (
                pq.ParquetWriter(data_tmp, OUTPUT_SCHEMA) as kept_writer,
                pq.ParquetWriter(removed_tmp, REMOVED_SCHEMA) as removed_writer,
                pq.ParquetWriter(audit_tmp, AUDIT_SCHEMA) as audit_writer,
            ):
                for record_batch in pq.ParquetFile(spool).iter_batches(batch_size=self.recipe.batch_size):
                    batch, dedup_stats = run_stage(marker, pa.Table.from_batches([record_batch]))
                    report.stages["dedup"].merge(dedup_stats)
                    self._count_flags(batch, report)
                    kept, removed = split_kept(batch)
                    kept_writer.write_table(to_output(kept))
                    removed_writer.write_table(removed.select(REMOVED_SCHEMA.names).cast(REMOVED_SCHEMA))
                    audit_writer.write_table(removed.select(AUDIT_SCHEMA.names).cast(AUDIT_SCHEMA))

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


def build(recipe: str | Path | Recipe, output: str, *, workers: int = 1, on_rows: Callable[[str, int], None] | None = None) -> BuildReport:
    """Build every config of ``recipe`` into the Hub-layout folder ``output``; resumes an interrupted build."""
    if not isinstance(recipe, Recipe):
        recipe = Recipe.load(recipe)
    return Builder(recipe, output, workers=workers, on_rows=on_rows).run()
