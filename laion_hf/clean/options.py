"""What a clean run is asked to do, and turning that into a ready :class:`RemovalStage`.

Everything is loaded and validated here, in the parent process, before any
shard is touched: a malformed list or a missing punsafe column stops the run
before OUTPUT gets a single file.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace

import pyarrow as pa
import pyarrow.compute as pc

from laion_hf.core.errors import UserError
from laion_hf.core.schema import require_columns, resolve_columns
from laion_hf.io.parquet import iter_tables, open_parquet
from laion_hf.io.removal_lists import RemovalSets, load_removal_sets
from laion_hf.io.shards import discover_shards
from laion_hf.stages.removal import (
    MissingPunsafeError,
    RemovalStage,
    keyword_pattern,
    laion_hashes,
    load_keywords,
    resolve_threshold,
)

BATCH_SIZE = 65536


def default_workers() -> int:
    """One worker per two cores: a worker keeps two busy (it writes parquet on a second thread).

    A pool worker also costs about 1.5 CPU s to start (a fresh interpreter with
    pyarrow and pandas): on 2 cores one worker is as fast as two and uses less
    CPU and memory (docs/benchmarks.md, "clean").
    """
    return max(1, (os.cpu_count() or 1) // 2)


@dataclass(frozen=True)
class CleanOptions:
    """Removal sources and variant of a clean run (see ``laion-hf clean --help``)."""

    remove: tuple[tuple[str, str], ...] = ()
    keep_reference: str | None = None
    variant: str | None = None
    punsafe_threshold: float | None = None
    keyword_file: str | None = None
    skip_invalid: bool = False
    metadata: str | None = None
    metadata_output: str | None = None
    batch_size: int = BATCH_SIZE

    def to_dict(self) -> dict:
        data = asdict(self)
        data["remove"] = [list(pair) for pair in self.remove]
        return data


@dataclass
class LoadedSources:
    """The stage plus what loading its sources found (for the report)."""

    stage: RemovalStage
    removal: RemovalSets
    notes: list[str] = field(default_factory=list)


def load_reference(path: str, batch_size: int = BATCH_SIZE) -> pa.Array:
    """LAION hashes of a Re-LAION-style parquet set (a file or a directory of shards)."""
    try:
        files = [s.parquet for s in discover_shards(path)] if not path.endswith(".parquet") else [path]
    except FileNotFoundError as exc:
        raise UserError(f"--keep-reference {exc}") from exc
    arrays = []
    for file in files:
        parquet = open_parquet(file)
        names = parquet.schema_arrow.names
        cols = resolve_columns(names, ["hash", "url", "caption"])
        if cols["hash"] is None:
            require_columns(names, ["url"], file)
        wanted = [c for c in cols.values() if c is not None]
        for table in iter_tables(parquet, file, batch_size, columns=wanted):
            arrays.append(laion_hashes(table))
    chunks = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays]
    return pc.unique(pa.concat_arrays(chunks)) if chunks else pa.array([], pa.int64())


def flagged_metadata_hashes(metadata_dir: str, threshold: float, batch_size: int = BATCH_SIZE) -> pa.Array:
    """LAION hashes of metadata rows whose punsafe is strictly above ``threshold``.

    This is how an img2dataset download (whose sidecar has no punsafe) is
    cleaned alongside the LAION metadata it came from: its samples map back to
    metadata rows by the LAION hash of (url, caption). Memory holds only the
    flagged rows' hashes.
    """
    flagged = []
    for shard in discover_shards(metadata_dir):
        parquet = open_parquet(shard.parquet)
        names = parquet.schema_arrow.names
        cols = resolve_columns(names, ["punsafe", "hash", "url", "caption"])
        if cols["punsafe"] is None:
            raise MissingPunsafeError(f"{shard.parquet}: --metadata needs a punsafe column (has: {', '.join(names)})")
        stage = RemovalStage(punsafe_threshold=threshold)
        for table in iter_tables(parquet, shard.parquet, batch_size, columns=[c for c in cols.values() if c]):
            hit = pc.is_valid(stage(table)["drop_reason"])
            if pc.any(hit).as_py():
                flagged.append(pc.filter(laion_hashes(table), hit))
    chunks = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in flagged]
    return pc.unique(pa.concat_arrays(chunks)) if chunks else pa.array([], pa.int64())


def build_stage(options: CleanOptions) -> LoadedSources:
    """Load every source named in ``options`` and return the configured stage."""
    removal = load_removal_sets(options.remove, options.skip_invalid)
    threshold = resolve_threshold(options.variant, options.punsafe_threshold)
    reference = load_reference(options.keep_reference, options.batch_size) if options.keep_reference else None
    keywords = load_keywords(options.keyword_file) if options.keyword_file else []
    flagged = None
    notes = []
    if options.metadata_output is not None and options.metadata is None:
        raise UserError("--metadata-output needs --metadata (the LAION metadata the download came from)")
    if options.metadata is not None:
        if threshold is None and options.metadata_output is None:
            raise UserError("--metadata is only needed for a punsafe variant or --metadata-output; pass either as well")
        if threshold is not None:
            flagged = flagged_metadata_hashes(options.metadata, threshold, options.batch_size)
            notes.append(f"{len(flagged)} metadata rows of {options.metadata} have punsafe > {threshold}")
    stage = RemovalStage(
        removal=removal,
        reference_hashes=reference,
        punsafe_threshold=threshold,
        flagged_hashes=flagged,
        keyword_regex=keyword_pattern(keywords),
    )
    return LoadedSources(stage, removal, notes)


def metadata_stage(download_stage: RemovalStage, sample_removals: dict[str, pa.Array]) -> RemovalStage:
    """The stage for the LAION metadata a download came from, cleaned in the same run.

    The same lists, reference, threshold and keywords; punsafe from the
    metadata's own column; image lists replaced by the hashes of the rows whose
    downloaded image they removed (metadata has no image to hash).
    """
    removal = download_stage.removal or RemovalSets()
    link_lists = RemovalSets({k: v for k, v in removal.sets.items() if not k.startswith("image-")}, removal.lists)
    return replace(download_stage, removal=link_lists, flagged_hashes=None, sample_removals=sample_removals)
