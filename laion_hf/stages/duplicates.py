"""Duplicate rules of a whole run: exact on the LAION hash, near-duplicates by perceptual (or embedding) hash.

- *signatures*: ``(shard, key, hash, phash)`` per sample. ``hash`` is the LAION
  hash of (url, caption) (computed when the column is absent,
  :func:`signature_hashes`); ``phash`` the 64-bit DCT perceptual hash of the
  image (``imagehash.phash``, :func:`perceptual_hash`), null when it does not
  decode; optionally a 64-bit SimHash of each CLIP image embedding
  (:func:`embedding_signatures`).
- :func:`decide`: rows in (shard name, key) order. The first row of each LAION
  hash is its keeper; every later one is ``duplicate-hash``. Among the
  remaining rows, a row whose phash is within ``max_distance`` bits of an
  earlier kept row is ``near-duplicate-phash`` of the earliest such row (then
  the same on embeddings: ``near-duplicate-embedding``). Candidates come from a
  multi-index: the 64 bits are cut into ``m`` bands, two hashes within the
  distance agree exactly on at least ``m - max_distance`` of them (pigeonhole),
  so only values sharing such a combination of bands are compared; ``m`` grows
  with the run, so candidates per row stay few. The ``duplicate_of`` of every
  removed row is the key of a row that is kept.
- :class:`DuplicateMarker`: an ordinary stage that marks the decided rows with
  their reason and fills ``duplicate_of``.

The dedup step (:mod:`laion_hf.steps.dedup`) runs them over a folder of shards.
"""

from __future__ import annotations

import io
import itertools
import math

import imagehash
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, ImageOps

from laion_hf.core.errors import UserError
from laion_hf.core.hashing import laion_hash_array
from laion_hf.core.schema import resolve_columns
from laion_hf.core.stage import Stage, alive_mask, mark_dropped
from laion_hf.io.atomic import filesystem, join

DUPLICATE_OF = "duplicate_of"
DUPLICATE_HASH = "duplicate-hash"
NEAR_DUPLICATE_PHASH = "near-duplicate-phash"
NEAR_DUPLICATE_EMBEDDING = "near-duplicate-embedding"
EMBEDDING_SIMHASH = "embedding_simhash"
DEFAULT_MAX_EMBEDDING_DISTANCE = 3  # SimHash bits of 64: an angle under ~8.4 degrees, cosine above ~0.99
DEFAULT_MAX_DISTANCE = 4  # bits of 64; re-encodes and small resizes of one image stay within it
SIGNATURE_SCHEMA = pa.schema(
    [("shard", pa.string()), ("key", pa.string()), ("hash", pa.int64()), ("phash", pa.int64())]
)


class DedupError(UserError):
    """Bad dedup input (embedding folder) or an output folder from a run with other options."""


# -- pass 1: signatures ----------------------------------------------------------------------------


def perceptual_hash(data: bytes) -> int | None:
    """The 64-bit pHash of an image as a signed int64, or None if the bytes do not decode."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("L", (64, 64))  # JPEG: decode at reduced size; pHash works on 32x32 anyway
            value = int(str(imagehash.phash(ImageOps.exif_transpose(image))), 16)  # as displayed, as CLIP sees it
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return value - (1 << 64) if value >= 1 << 63 else value


def signature_hashes(batch: pa.Table) -> pa.Array:
    columns = resolve_columns(batch.column_names, ["hash", "url", "caption"])
    if columns["hash"] is not None:
        return batch[columns["hash"]].cast(pa.int64())
    if columns["url"] is None:
        return pa.nulls(batch.num_rows, pa.int64())  # no hash and no url: nothing to match exactly
    captions = batch[columns["caption"]] if columns["caption"] else pa.nulls(batch.num_rows, pa.string())
    return laion_hash_array(batch[columns["url"]], captions)


# -- the decision ------------------------------------------------------------------------------------

_KEPT = 0
_REASONS = (None, DUPLICATE_HASH, NEAR_DUPLICATE_PHASH, NEAR_DUPLICATE_EMBEDDING)  # a row's reason, by code


def _bands(count: int) -> list[tuple[int, int]]:
    """(shift, mask) of ``count`` near-equal bit bands covering 64 bits."""
    edges = [round(i * 64 / count) for i in range(count + 1)]
    return [(lo, (1 << (hi - lo)) - 1) for lo, hi in zip(edges, edges[1:])]


def _band_count(max_distance: int, values: int) -> int:
    """How many bands to cut 64 bits into, for ``values`` distinct hashes.

    With ``m`` bands, two hashes within ``max_distance`` bits agree exactly on at
    least ``m - max_distance`` of them, so each combination of that many bands is
    an exact-match key and no pair is missed. ``m = max_distance + 1`` (one band
    each) costs few keys, but its ~13-bit keys make every row a candidate of one
    in 8,000 others: quadratic, 73 CPU s at 400k rows. More bands mean more keys
    of more bits each; this picks the ``m`` with the fewest expected key lookups
    plus random candidates per hash.
    """

    def cost(m: int) -> float:
        keys = math.comb(m, m - max_distance)
        return keys * (1 + values / 2 ** (64 * (m - max_distance) // m))

    return min(range(max_distance + 1, max_distance + 13), key=cost)


def _close_pairs(values: np.ndarray, max_distance: int) -> np.ndarray:
    """Every index pair ``(i, j)``, ``i < j``, of distinct uint64 ``values`` within ``max_distance`` bits."""
    bands = _bands(_band_count(max_distance, len(values)))
    parts = [(values >> np.uint64(shift)) & np.uint64(mask) for shift, mask in bands]
    found = [np.empty((0, 2), np.int64)]
    for combination in itertools.combinations(range(len(bands)), len(bands) - max_distance):
        key = np.zeros(len(values), np.uint64)
        for band in combination:
            width = bands[band][1].bit_length()
            key = (key << np.uint64(width)) | parts[band]
        order = np.argsort(key)
        key = key[order]
        for offset in range(1, len(key)):  # rows sharing a key are contiguous: pair each with the next ones
            same = np.flatnonzero(key[offset:] == key[:-offset])
            if not same.size:
                break
            first, second = order[same], order[same + offset]
            close = np.bitwise_count(values[first] ^ values[second]) <= max_distance
            found.append(np.stack([first[close], second[close]], axis=1))
    return np.unique(np.sort(np.concatenate(found), axis=1), axis=0)  # a pair agreeing on several keys, once


def _near_pass(
    hashes: pa.ChunkedArray, max_distance: int, label: int, keeper: np.ndarray, reason: np.ndarray
) -> None:
    """Mark rows (in order) within ``max_distance`` bits of an earlier kept row; update keeper/reason in place.

    The result is the one-row-at-a-time rule (each row, in order, is a
    near-duplicate of the earliest *kept* row within the distance), computed
    on distinct values: rows repeating a value are near-duplicates of its first
    row (or of what that row is a near-duplicate of), so an image repeated a
    million times costs one value, not 10^12 pairs; candidate pairs of distinct
    values come from :func:`_close_pairs`; only values in a pair are walked.
    """
    eligible = pc.is_valid(hashes).to_numpy(zero_copy_only=False) & (reason == _KEPT)
    rows = np.flatnonzero(eligible)
    if not rows.size:
        return
    row_values = pc.fill_null(hashes, 0).to_numpy().view(np.uint64)[rows]
    values, first, inverse = np.unique(row_values, return_index=True, return_inverse=True)
    first_row = rows[first]  # np.unique's first index is the earliest row of each value
    value_keeper = first_row.copy()  # a value's first row, or the kept row it is a near-duplicate of
    pairs = _close_pairs(values, max_distance)
    if pairs.size:
        earlier = first_row[pairs[:, 0]] < first_row[pairs[:, 1]]
        before = np.where(earlier, pairs[:, 0], pairs[:, 1])
        after = np.where(earlier, pairs[:, 1], pairs[:, 0])
        order = np.lexsort((first_row[before], first_row[after]))  # by the later value, then its earliest partner
        removed_value = np.zeros(len(values), bool)
        decided = -1
        for later, partner in zip(after[order].tolist(), before[order].tolist()):
            if later != decided and not removed_value[partner]:
                removed_value[later] = True
                value_keeper[later] = first_row[partner]
                decided = later
        first_removed = first_row[removed_value]
        keeper[first_removed] = value_keeper[removed_value]
        reason[first_removed] = label
    repeats = rows[rows != first_row[inverse]]
    keeper[repeats] = value_keeper[inverse[rows != first_row[inverse]]]
    reason[repeats] = label


def decide(
    signatures: pa.Table,
    max_distance: int | None = DEFAULT_MAX_DISTANCE,
    max_embedding_distance: int | None = None,
) -> pa.Table:
    """Rows to remove: ``(shard, key, duplicate_of, reason)``; keepers are first in (shard, key) order.

    ``signatures`` has columns shard, key, hash, phash and optionally
    ``embedding_simhash``. ``None`` distances turn that near-duplicate pass off.
    A null hash, phash or simhash matches nothing.
    """
    ordered = signatures.sort_by([("shard", "ascending"), ("key", "ascending")])
    n = ordered.num_rows
    keeper = np.arange(n)
    reason = np.zeros(n, np.int8)

    hashes = ordered["hash"]
    valid = np.flatnonzero(pc.is_valid(hashes).to_numpy(zero_copy_only=False))
    if valid.size:
        _, first, inverse = np.unique(hashes.take(pa.array(valid)).to_numpy(), return_index=True, return_inverse=True)
        first_of_hash = valid[first[inverse]]
        twins = first_of_hash != valid
        keeper[valid[twins]] = first_of_hash[twins]
        reason[valid[twins]] = _REASONS.index(DUPLICATE_HASH)
    if max_distance is not None:
        _near_pass(ordered["phash"], max_distance, _REASONS.index(NEAR_DUPLICATE_PHASH), keeper, reason)
    if max_embedding_distance is not None and EMBEDDING_SIMHASH in ordered.column_names:
        _near_pass(ordered[EMBEDDING_SIMHASH], max_embedding_distance, _REASONS.index(NEAR_DUPLICATE_EMBEDDING),
                   keeper, reason)

    # An exact twin of a row that is itself a near-duplicate points at the row finally kept.
    final = keeper.copy()
    while (chained := reason[final] != _KEPT).any():
        final[chained] = keeper[final[chained]]
    removed = np.flatnonzero(reason != _KEPT)
    take = pa.array(removed, pa.int64())
    return pa.table(
        {
            "shard": ordered["shard"].take(take),
            "key": ordered["key"].take(take).cast(pa.string()),
            DUPLICATE_OF: ordered["key"].take(pa.array(final[removed], pa.int64())).cast(pa.string()),
            "reason": pa.array([_REASONS[code] for code in reason[removed]], pa.string()),
        }
    )


# -- CLIP embeddings (clip-retrieval layout) -> 64-bit SimHash ---------------------------------------


def embedding_signatures(embeddings_dir: str, seed: int = 0) -> pa.Table:
    """``(key, embedding_simhash)`` for every image embedding of a clip-retrieval folder.

    The folder is what ``laion-hf filter`` saves: ``img_emb/img_emb_NAME.npy``
    beside ``metadata/metadata_NAME.parquet`` (same order, with ``key``).
    SimHash (Charikar): the sign of 64 seeded random projections; the Hamming
    distance of two signatures / 64 estimates their angle / pi, so only
    8 bytes per image are ever held. Embeddings are memory-mapped and read
    in chunks.
    """
    fs, inner = filesystem(join(embeddings_dir, "metadata"))
    if not fs.isdir(inner):
        raise DedupError(f"{embeddings_dir}: no metadata/ folder of a clip-retrieval embedding set")
    parts: list[pa.Table] = []
    planes: np.ndarray | None = None
    weights = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))
    for path in sorted(p for p in fs.ls(inner, detail=False) if p.endswith(".parquet")):
        name = path.rsplit("/", 1)[-1].removeprefix("metadata_").removesuffix(".parquet")
        keys = pq.read_table(path, columns=["key"])["key"].cast(pa.string())
        embeddings = np.load(join(embeddings_dir, "img_emb", f"img_emb_{name}.npy"), mmap_mode="r")
        if embeddings.shape[0] != len(keys):
            raise DedupError(f"{path}: {len(keys)} rows but img_emb_{name}.npy holds {embeddings.shape[0]} embeddings")
        if planes is None and len(keys):
            planes = np.random.default_rng(seed).standard_normal((embeddings.shape[1], 64)).astype(np.float32)
        signatures = np.empty(len(keys), np.uint64)
        for start in range(0, len(keys), 65_536):
            chunk = np.asarray(embeddings[start:start + 65_536], dtype=np.float32)
            bits = (chunk @ planes) > 0
            signatures[start:start + len(chunk)] = (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
        parts.append(pa.table({"key": keys, EMBEDDING_SIMHASH: pa.array(signatures.view(np.int64))}))
    if not parts:
        raise DedupError(f"{embeddings_dir}: metadata/ holds no parquet files")
    return pa.concat_tables(parts)


# -- pass 2: marking ---------------------------------------------------------------------------------


class DuplicateMarker(Stage):
    """Marks the rows the decision step removed, with their reason, and names their keeper."""

    name = "dedup"

    def __init__(self, decisions: dict[str, tuple[str, str]]) -> None:
        self.decisions = decisions  # key -> (duplicate_of, reason), for one shard

    @classmethod
    def from_file(cls, path: str) -> DuplicateMarker:
        table = pq.read_table(path)
        return cls({k: (d, r) for k, d, r in zip(*(table[c].to_pylist() for c in ("key", DUPLICATE_OF, "reason")))})

    def __call__(self, batch: pa.Table) -> pa.Table:
        key_column = resolve_columns(batch.column_names, ["key"])["key"]
        alive = alive_mask(batch).to_pylist()
        found = [self.decisions.get(str(k)) if a else None for k, a in zip(batch[key_column].to_pylist(), alive)]
        keeper = pa.array([f[0] if f else None for f in found], pa.string())
        if DUPLICATE_OF in batch.column_names:
            batch = batch.set_column(batch.column_names.index(DUPLICATE_OF), DUPLICATE_OF, keeper)
        else:
            batch = batch.append_column(DUPLICATE_OF, keeper)
        for reason in (DUPLICATE_HASH, NEAR_DUPLICATE_PHASH, NEAR_DUPLICATE_EMBEDDING):
            batch = mark_dropped(batch, pa.array([bool(f) and f[1] == reason for f in found]), reason)
        return batch
