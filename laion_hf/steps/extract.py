"""The extract step: Common Crawl WAT files -> deduplicated image/text candidate shards.

Two phases, both runner maps and both resumable (see :mod:`laion_hf.extract.extract`
for the rules):

1. *per file*: :func:`~laion_hf.extract.extract.extract_file` over the WAT
   files (one unit each), writing ``_files/<name>.parquet``;
2. *global*: pairs repeated across files are dropped by a hash-partitioned
   shuffle (:mod:`laion_hf.extract.dedup`: keys per group of files, duplicates
   per partition, first file in input order wins), which writes the final
   ``<name>.parquet`` shards, with ``duplicate_global`` added to each file's
   counts so that ``IMG links = kept + dropped`` still holds.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.core.stage import StageStats
from laion_hf.extract import rules
from laion_hf.extract.dedup import PairShuffle, find_duplicates, group_duplicates, write_keys
from laion_hf.extract.extract import (
    COMMON_CRAWL_PREFIX,
    DEDUP_MARKER,
    FILES_DIR,
    REPORT_FILE,
    SCRATCH_DIR,
    STAGE,
    ExtractInputError,
    WatInput,
    expand_inputs,
    extract_file,
)
from laion_hf.extract.language import LanguageDetector
from laion_hf.io.atomic import atomic_path, filesystem, join, read_json, remove_stale_temporaries, write_json
from laion_hf.io.data_card import write_data_card
from laion_hf.io.shuffle import remove_other_runs
from laion_hf.runners.base import Runner
from laion_hf.runners.local import LocalRunner
from laion_hf.steps.registry import Context, Driver
from laion_hf.steps.specs import keyword_options


@dataclass
class ExtractReport:
    """What a run produced: final shards, per-file stats (StageStats-compatible dicts) and their total."""

    output_dir: str
    shards: list[str]
    files: dict[str, dict[str, Any]]
    total: StageStats = field(default_factory=lambda: StageStats(STAGE))
    records: int = 0
    response_pages: int = 0
    malformed: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": self.output_dir,
            "shards": self.shards,
            "total": self.total.to_dict(),
            "records": self.records,
            "response_pages": self.response_pages,
            "malformed": dict(self.malformed),
            "files": self.files,
        }




def _digest(path: str) -> str:
    """sha256 of a per-file result (a few MB of candidates: cheap next to extracting it)."""
    with fsspec.open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _apply_global_dedup(
    wats: list[WatInput], files_dir: str, output_dir: str, stats: dict[str, dict], runner: Runner
) -> None:
    """Write the final shards without cross-file duplicates; add ``duplicate_global`` to each file's stats.

    The shuffle's three maps (:mod:`laion_hf.extract.dedup`) are ``runner``'s
    units, each resumable; their scratch folder is named by the per-file
    results it is computed from, so a re-extracted file starts a new one.
    """
    names = [w.name for w in wats]
    # By content: a re-extracted file invalidates the result even when its stats come out the same (a tiny file
    # re-extracted in the same rounded time did).
    inputs = {name: _digest(join(files_dir, f"{name}.parquet")) for name in names}
    marker = join(output_dir, DEDUP_MARKER)
    fs, inner = filesystem(marker)
    recorded = read_json(marker) if fs.exists(inner) else {}
    if recorded.get("files") == names and recorded.get("inputs") == inputs:
        duplicates_by_name = recorded["duplicates"]
    else:
        run = hashlib.sha256(json.dumps([names, inputs]).encode()).hexdigest()[:16]
        scratch = join(output_dir, SCRATCH_DIR)
        remove_other_runs(scratch, keep=run)
        shuffle = PairShuffle.plan([join(files_dir, f"{name}.parquet") for name in names],
                                   [stats[name]["kept"] for name in names], join(scratch, run))
        groups, partitions = range(shuffle.groups), range(shuffle.partitions)
        runner.map(groups, functools.partial(write_keys, shuffle=shuffle), output_dir=join(shuffle.work_dir, "keys"),
                   name_of=_unit_name, description="dedup: keys")
        runner.map(partitions, functools.partial(find_duplicates, shuffle=shuffle),
                   output_dir=join(shuffle.work_dir, "duplicates"), name_of=_unit_name, description="dedup: reduce")
        written = runner.map(
            groups, functools.partial(_write_group, shuffle=shuffle, names=names, output_dir=output_dir),
            output_dir=join(shuffle.work_dir, "written"), name_of=_unit_name, description="dedup: write",
        )
        duplicates_by_name = {name: n for record in written.values() for name, n in record["duplicates"].items()}
        write_json(marker, {"files": names, "inputs": inputs, "duplicates": duplicates_by_name})
        fs.rm(filesystem(scratch)[1], recursive=True)
    for name in names:
        record = stats[name]
        count = duplicates_by_name[name]
        if count:
            record["kept"] -= count
            record["dropped"] = dict(sorted({**record["dropped"], rules.DUPLICATE_GLOBAL: count}.items()))


def _unit_name(index: int) -> str:
    return f"{index:05d}"


def _write_group(group: int, shuffle: PairShuffle, names: list[str], output_dir: str) -> dict[str, Any]:
    """The last map: a group's final shards, each its per-file result without the rows that repeat earlier ones."""
    counts = {}
    for file, rows in group_duplicates(group, shuffle).items():
        with fsspec.open(shuffle.files[file], "rb") as source:
            table = pq.read_table(source)
        if len(rows):
            keep = np.ones(table.num_rows, dtype=bool)
            keep[rows] = False
            table = table.filter(pa.array(keep))
        with atomic_path(join(output_dir, f"{names[file]}.parquet")) as tmp, fsspec.open(tmp, "wb") as sink:
            pq.write_table(table, sink, compression="zstd")
        counts[names[file]] = int(len(rows))
    return {"duplicates": counts}


def extract(
    inputs: list[str],
    output_dir: str,
    workers: int = 1,
    *,
    listing_prefix: str = COMMON_CRAWL_PREFIX,
    global_dedup: bool = True,
    detect_language: bool = True,
    show_progress: bool = True,
    runner: Runner | None = None,
) -> ExtractReport:
    """Extract LAION image/text candidates from WAT files into parquet shards in ``output_dir``.

    Re-running with the same inputs skips finished files (their recorded stats
    are reused) and redoes unfinished ones from scratch; a killed run's
    temporaries are removed first, and its dedup resumes from its finished
    units. Files, and the dedup's groups and partitions, are
    ``runner``'s units (default: a local runner with ``workers`` processes).
    """
    wats = expand_inputs(inputs, listing_prefix)
    if not wats:
        raise ExtractInputError("no WAT input given")
    remove_stale_temporaries(output_dir)  # a killed run's half-written final shards
    files_dir = join(output_dir, FILES_DIR)
    detector = LanguageDetector() if detect_language else None
    process = functools.partial(extract_file, files_dir=files_dir, detector=detector)
    runner = runner or LocalRunner(workers=workers, show_progress=show_progress)
    stats = runner.map(wats, process, output_dir=files_dir, name_of=attrgetter("name"), description="WAT files")
    if global_dedup:
        _apply_global_dedup(wats, files_dir, output_dir, stats, runner)
        shards = [join(output_dir, f"{w.name}.parquet") for w in wats]
    else:
        shards = [join(files_dir, f"{w.name}.parquet") for w in wats]
    report = ExtractReport(output_dir=output_dir, shards=shards, files=stats)
    for record in stats.values():
        file_stats = StageStats.from_dict(record)
        file_stats.check()
        report.total.merge(file_stats)
        report.records += record["records"]
        report.response_pages += record["response_pages"]
        report.malformed.update(record["malformed"])
    write_json(join(output_dir, REPORT_FILE), report.to_dict())
    write_data_card(output_dir)  # names the final shards, not _files/ (which `load_dataset` would add)
    return report


def recipe_options() -> set[str]:
    """The options a recipe may set under ``steps.extract`` (the rest the pipeline sets)."""
    return keyword_options(extract, {"show_progress", "runner"})


def work(spec: dict[str, Any], context: Context) -> Driver:
    """The recipe's extract step: every WAT file a unit of the pipeline's runner."""

    def run(inputs: list[str], output_dir: str, runner: Runner) -> list[StageStats]:
        started = time.perf_counter()
        report = extract(list(inputs), output_dir, runner=runner, **spec)
        return [report.total.timed(time.perf_counter() - started)]

    return Driver(run)
