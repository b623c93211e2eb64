"""The removal stage: mark rows that Re-LAION's rules take out, by reason.

Rules, in the order they claim a row (first reason wins):

1. removal lists (``url-md5``, ``url-sha256``, ``laion-hash``, ``sample-id``,
   ``image-md5``, ``image-sha256``) - exact matches, a NULL never matches; and,
   for LAION metadata cleaned together with its download, the rows whose
   downloaded image an image list removed (matched by the LAION hash of
   (url, caption), under the image list's reason): the metadata must not keep
   pointing at those images;
2. ``not-in-reference`` - with a keep-reference (a Re-LAION-style parquet set),
   rows whose LAION hash of (url, caption) is absent from it;
3. ``punsafe`` - rows whose punsafe is strictly above the variant's threshold
   (research 0.95, research-safe 0.45), from the row's own ``punsafe`` column or,
   for an img2dataset download without one, from the LAION metadata it was
   downloaded from (hashes of the flagged metadata rows);
4. ``keyword`` - captions containing a listed keyword as a whole word, case-insensitively.

The stage only marks (``drop_reason``); it never touches shard I/O, so the
build pipeline runs the very same object for its Re-LAION recipe.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from laion_hf.core.errors import UserError
from laion_hf.core.hashing import laion_hash_array
from laion_hf.core.schema import resolve_columns
from laion_hf.core.stage import Stage, ensure_drop_reason, mark_dropped
from laion_hf.io.removal_lists import DIGEST_SIZE, RemovalSets

#: punsafe thresholds of the Re-LAION-5B variants (rows strictly above are removed).
VARIANT_THRESHOLDS = {"research": 0.95, "research-safe": 0.45}
#: Columns the shard cleaner adds when an image digest comes from the tar's bytes, not the sidecar.
COMPUTED_IMAGE_DIGEST = {"md5": "__tar_image_md5", "sha256": "__tar_image_sha256"}
NOT_IN_REFERENCE = "not-in-reference"
PUNSAFE = "punsafe"
KEYWORD = "keyword"
_COLUMNS = ("url", "caption", "hash", "sample_id", "key", "punsafe", "md5", "sha256")


class MissingPunsafeError(UserError, ValueError):
    """A variant needs punsafe scores that the input does not have."""


def resolve_threshold(variant: str | None, threshold: float | None) -> float | None:
    """The punsafe threshold for ``variant`` (an explicit ``threshold`` overrides it)."""
    if variant is not None and variant not in VARIANT_THRESHOLDS:
        raise UserError(f"--variant {variant!r}: unknown (one of {', '.join(VARIANT_THRESHOLDS)})")
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0:
            raise UserError(f"--punsafe-threshold {threshold}: must be between 0 and 1")
        return threshold
    return VARIANT_THRESHOLDS.get(variant) if variant else None


def load_keywords(path: str) -> list[str]:
    """Keywords from a text file, one a line (blank lines and ``#`` comments ignored)."""
    try:
        with fsspec.open(path, "r", encoding="utf-8-sig") as f:
            return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read keyword file ({exc})") from exc


def keyword_pattern(keywords: Iterable[str]) -> str | None:
    """One RE2 pattern matching any keyword as a whole word (None for no keywords)."""
    words = sorted({k for k in keywords if k})
    if not words:
        return None
    return r"(?i)(?:^|\W)(?:" + "|".join(re.escape(w) for w in words) + r")(?:\W|$)"


def laion_hashes(batch: pa.Table) -> pa.Array | pa.ChunkedArray:
    """The LAION hash of each row: the ``hash`` column when the file has one (int64), else computed."""
    cols = resolve_columns(batch.column_names, ["hash", "url", "caption"])
    if cols["hash"] is not None and pa.types.is_integer(batch.schema.field(cols["hash"]).type):
        return pc.cast(batch[cols["hash"]], pa.int64())
    if cols["url"] is None:
        raise UserError("cannot compute the LAION hash: the batch has no url column")
    captions = batch[cols["caption"]] if cols["caption"] else pa.nulls(batch.num_rows, pa.string())
    return laion_hash_array(batch[cols["url"]], captions)


def url_digests(urls: pa.Array | pa.ChunkedArray, algorithm: str) -> pa.ChunkedArray:
    """Raw digests (``binary(16|32)``) of each URL's UTF-8 bytes, byte for byte; NULL stays NULL.

    Every row of a shard is hashed whatever the list's size, so this runs as one
    vectorised kernel (DataFusion's ``digest``: Rust's md-5/sha2 over the Arrow
    buffers, SHA-NI where the CPU has it) instead of a ``hashlib`` call per row,
    which costs 2.5x (md5) to 4x (sha256) more, nearly all of it creating an
    OpenSSL context (docs/benchmarks.md, clean). Tests hold it to ``hashlib``.
    """
    from datafusion import SessionConfig, SessionContext, col, functions

    size = DIGEST_SIZE[algorithm]
    raw = pc.cast(urls, pa.binary())  # string -> binary reuses the buffers
    chunks = [chunk for chunk in (raw.chunks if isinstance(raw, pa.ChunkedArray) else [raw]) if len(chunk)]
    if not chunks:
        return pa.chunked_array([], pa.binary(size))
    # One partition: DataFusion reads the batches in turn, so the digests come back in row order.
    context = SessionContext(SessionConfig().with_target_partitions(1))
    frame = context.read_batches(pa.RecordBatch.from_arrays([chunk], ["url"]) for chunk in chunks)
    digests = frame.select(functions.digest(col("url"), algorithm).alias("digest")).to_arrow_table()["digest"]
    return pc.cast(digests, pa.binary(size))


def _normalized_hex(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Sidecar digests compared case- and whitespace-insensitively, like list values."""
    return pc.utf8_lower(pc.replace_substring_regex(pc.cast(column, pa.string()), r"\s+", ""))


@dataclass
class RemovalStage(Stage):
    """Marks rows matched by removal lists, a keep-reference, a punsafe threshold or keywords.

    Built from already-loaded sets (Arrow arrays) so that it pickles cheaply to
    worker processes and Ray actors; :func:`laion_hf.clean.options.build_stage`
    builds it from file paths.
    """

    removal: RemovalSets | None = None
    reference_hashes: pa.Array | None = None
    punsafe_threshold: float | None = None
    flagged_hashes: pa.Array | None = None
    keyword_regex: str | None = None
    #: reason -> LAION hashes of rows whose downloaded sample that reason removed (image lists).
    sample_removals: dict[str, pa.Array] | None = None
    name: str = "removal"

    @property
    def image_reasons(self) -> list[str]:
        """The reasons image lists give (``image-md5``/``image-sha256``)."""
        return [f"image-{alg}" for alg in self.image_algorithms]

    @property
    def image_algorithms(self) -> list[str]:
        """Digest algorithms the image lists need (``md5``/``sha256``)."""
        kinds = self.removal.sets if self.removal else {}
        return [alg for alg in ("md5", "sha256") if f"image-{alg}" in kinds]

    def check_columns(self, names: list[str], source: str) -> None:
        """Refuse an input this stage cannot decide on, naming ``source``."""
        cols = resolve_columns(names, _COLUMNS)
        if self.punsafe_threshold is not None and cols["punsafe"] is None and self.flagged_hashes is None:
            raise MissingPunsafeError(
                f"{source}: the variant needs a punsafe column and this file has none "
                f"(has: {', '.join(names)}); clean the LAION-5B '-joined' metadata, or pass "
                "--metadata with it when cleaning an img2dataset download"
            )
        if self.keyword_regex is not None and cols["caption"] is None:
            raise UserError(f"{source}: --keyword-file needs a caption/TEXT column (has: {', '.join(names)})")
        if cols["url"] is None and cols["hash"] is None and self._needs_hash():
            raise UserError(f"{source}: matching on the LAION hash needs url or hash column (has: {', '.join(names)})")

    def _needs_hash(self) -> bool:
        kinds = self.removal.sets if self.removal else {}
        return ("laion-hash" in kinds or self.reference_hashes is not None or self.flagged_hashes is not None
                or bool(self.sample_removals))

    def __call__(self, batch: pa.Table) -> pa.Table:
        batch = ensure_drop_reason(batch)
        cols = resolve_columns(batch.column_names, _COLUMNS)
        sets = self.removal.sets if self.removal else {}
        hashes = laion_hashes(batch) if self._needs_hash() else None

        for algorithm in ("md5", "sha256"):
            values = sets.get(f"url-{algorithm}")
            if values is not None and cols["url"] is not None:
                digests = url_digests(batch[cols["url"]], algorithm)
                batch = mark_dropped(batch, pc.is_in(digests, value_set=values), f"url-{algorithm}")
        if "laion-hash" in sets:
            batch = mark_dropped(batch, pc.is_in(hashes, value_set=sets["laion-hash"]), "laion-hash")
        if "sample-id" in sets:
            id_column = cols["sample_id"] or cols["key"]
            if id_column is not None:
                ids = pc.cast(batch[id_column], pa.string())
                batch = mark_dropped(batch, pc.is_in(ids, value_set=sets["sample-id"]), "sample-id")
        for algorithm in self.image_algorithms:
            column = cols[algorithm] or (
                COMPUTED_IMAGE_DIGEST[algorithm] if COMPUTED_IMAGE_DIGEST[algorithm] in batch.column_names else None
            )
            if column is not None:
                digests = _normalized_hex(batch[column])
                batch = mark_dropped(batch, pc.is_in(digests, value_set=sets[f"image-{algorithm}"]), f"image-{algorithm}")
        for reason, removed in (self.sample_removals or {}).items():
            batch = mark_dropped(batch, pc.is_in(hashes, value_set=removed), reason)

        if self.reference_hashes is not None:
            batch = mark_dropped(batch, pc.invert(pc.is_in(hashes, value_set=self.reference_hashes)), NOT_IN_REFERENCE)

        if self.punsafe_threshold is not None:
            if cols["punsafe"] is not None:
                scores = batch[cols["punsafe"]]
                # Compared in the column's own type: a float32 0.45 is not "above" a 0.45 threshold.
                above = pc.greater(scores, pa.scalar(self.punsafe_threshold).cast(scores.type))
                batch = mark_dropped(batch, above, PUNSAFE)
            if self.flagged_hashes is not None:
                batch = mark_dropped(batch, pc.is_in(hashes, value_set=self.flagged_hashes), PUNSAFE)

        if self.keyword_regex is not None and cols["caption"] is not None:
            hit = pc.match_substring_regex(batch[cols["caption"]], self.keyword_regex)
            batch = mark_dropped(batch, hit, KEYWORD)
        return batch
