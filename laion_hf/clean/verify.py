"""Prove a cleaned copy holds none of the removed values, by re-reading it.

Every parquet row is matched again against the rules (the same
:class:`RemovalStage`): the removal lists, and when asked the variant's
punsafe threshold (from the rows, or from ``--metadata`` for a download) and
the keyword file. Every tar sample is checked too: its key must be a row of
the cleaned parquet, and its image bytes must not match an image list (so
re-encoded copies of listed originals are caught where the bytes are
unchanged, in addition to the sidecar digests). Every row the parquet says was
downloaded must have its sample in the tar: a tar cut short at a member
boundary reads without error, and would otherwise pass. A tar cut inside a
member is refused (:class:`laion_hf.io.tar.CorruptTarError`, naming the file).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow.compute as pc

from laion_hf.clean.options import CleanOptions, build_stage
from laion_hf.clean.shard import SUCCESS
from laion_hf.core.errors import UserError
from laion_hf.core.hashing import hex_digest
from laion_hf.core.schema import resolve_columns
from laion_hf.io.parquet import iter_tables, open_parquet
from laion_hf.io.samples import IMAGE_EXTENSIONS
from laion_hf.io.shards import discover_shards
from laion_hf.io.tar import iter_samples


@dataclass(frozen=True)
class Violation:
    """A removed value that is still present: where, which rule, and the offending value."""

    file: str
    where: str
    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.kind} {self.value}"


@dataclass
class VerifyResult:
    violations: list[Violation]
    rows: int
    samples: int


def verify_copy(
    output_dir: str,
    removal_sources: Iterable[tuple[str, str]],
    skip_invalid: bool = False,
    batch_size: int = 65536,
    *,
    variant: str | None = None,
    punsafe_threshold: float | None = None,
    keyword_file: str | None = None,
    metadata: str | None = None,
) -> VerifyResult:
    """Re-read ``output_dir`` against the rules; the violations and how much was checked.

    ``variant``/``punsafe_threshold``, ``keyword_file`` and ``metadata`` mean
    what they mean to ``clean``; a rule that cannot be checked (a variant on
    rows without punsafe and no ``metadata``) is refused, never skipped.
    """
    options = CleanOptions(remove=tuple(removal_sources), variant=variant, punsafe_threshold=punsafe_threshold,
                           keyword_file=keyword_file, skip_invalid=skip_invalid, metadata=metadata, batch_size=batch_size)
    loaded = build_stage(options)
    stage, removal = loaded.stage, loaded.removal
    violations: list[Violation] = []
    rows = samples = 0
    try:
        shards = discover_shards(output_dir)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from exc
    image_lists = {alg: set(removal.sets[f"image-{alg}"].to_pylist()) for alg in stage.image_algorithms}
    for shard in shards:
        parquet = open_parquet(shard.parquet)
        stage.check_columns(parquet.schema_arrow.names, shard.parquet)
        cols = resolve_columns(parquet.schema_arrow.names, ["url", "key", "status"])
        keys: set[str] = set()
        downloaded: set[str] = set()
        for table in iter_tables(parquet, shard.parquet, batch_size):
            marked = stage(table)
            if cols["key"]:
                batch_keys = [str(k) for k in table[cols["key"]].to_pylist()]
                keys.update(batch_keys)
                statuses = table[cols["status"]].to_pylist() if cols["status"] else [SUCCESS] * len(batch_keys)
                downloaded.update(k for k, status in zip(batch_keys, statuses) if status == SUCCESS)
            hit = pc.is_valid(marked["drop_reason"])
            for index in pc.indices_nonzero(hit).to_pylist():
                row = marked.slice(index, 1).to_pylist()[0]
                where = f"row {rows + index}" + (f" key {row[cols['key']]}" if cols["key"] else "")
                value = row[cols["url"]] if cols["url"] else ""
                violations.append(Violation(shard.parquet, where, row["drop_reason"], repr(value)))
            rows += table.num_rows
        if shard.tar is None:
            continue
        for key, members in iter_samples(shard.tar):
            samples += 1
            downloaded.discard(key)
            if key not in keys:
                violations.append(Violation(shard.tar, f"key {key}", "orphan-sample", "no row in the parquet"))
            ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
            for alg, listed in image_lists.items():
                digest = hex_digest(alg, members[ext]) if ext is not None else None
                if digest in listed:
                    violations.append(Violation(shard.tar, f"key {key}", f"image-{alg} (tar bytes)", digest))
        for key in sorted(downloaded):
            violations.append(Violation(shard.tar, f"key {key}", "missing-sample",
                                        f"status {SUCCESS} in {shard.parquet}, not in the tar (cut short?)"))
    return VerifyResult(violations, rows, samples)


def verify_clean(output_dir: str, removal_sources: Iterable[tuple[str, str]]) -> list[Violation]:
    """Every removed value still present in ``output_dir`` (an empty list proves the copy clean)."""
    return verify_copy(output_dir, removal_sources).violations
