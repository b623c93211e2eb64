"""Duplicate rules of a whole run: exact on the LAION hash, near-duplicates by perceptual (or embedding) hash.

- *signatures*: ``(shard, key, hash, phash)`` per sample. ``hash`` is the LAION
  hash of (url, caption) (computed when the column is absent,
  :func:`signature_hashes`); ``phash`` the 64-bit DCT perceptual hash of the
  image (``imagehash.phash``, :func:`perceptual_hash`), null when it does not
  decode; optionally a 64-bit SimHash of each CLIP image embedding
  (:func:`embedding_signatures`).
- the rule: rows in (shard name, key) order. The first row of each LAION
  hash is its keeper; every later one is ``duplicate-hash``. Among the
  remaining rows, a row whose phash is within ``max_distance`` bits of an
  earlier kept row is ``near-duplicate-phash`` of the earliest such row (then
  the same on embeddings: ``near-duplicate-embedding``). The ``duplicate_of``
  of every removed row is the key of a row that is kept.
- its kernels, which the dedup step's shuffle runs on parts of a run
  (:mod:`laion_hf.steps.dedup_decision`): candidates come from a multi-index:
  the 64 bits are cut into ``m`` bands (:func:`band_count`), two hashes within
  the distance agree exactly on at least ``m - max_distance`` of them
  (pigeonhole), so only values sharing such a combination of bands are compared
  (:func:`band_keys`, :func:`close_pairs`); ``m`` grows with the run, so
  candidates per row stay few; :func:`keeper_walk` applies the rule to the
  close pairs of distinct values.
- :class:`DuplicateMarker`: an ordinary stage that marks the decided rows with
  their reason and fills ``duplicate_of``.

The dedup step (:mod:`laion_hf.steps.dedup`) runs them over a folder of shards.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Iterator

import imagehash
import numpy as np
import pyarrow as pa
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


# -- the decision's rules, as kernels the dedup step's shuffle runs on parts of a run -----------------

REASONS = (None, DUPLICATE_HASH, NEAR_DUPLICATE_PHASH, NEAR_DUPLICATE_EMBEDDING)  # a row's reason, by code
KEPT = 0


def _bands(count: int) -> list[tuple[int, int]]:
    """(shift, mask) of ``count`` near-equal bit bands covering 64 bits."""
    edges = [round(i * 64 / count) for i in range(count + 1)]
    return [(lo, (1 << (hi - lo)) - 1) for lo, hi in zip(edges, edges[1:])]


def band_count(max_distance: int, values: int) -> int:
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


def band_keys(values: np.ndarray, bands: int, max_distance: int) -> Iterator[np.ndarray]:
    """For each combination of ``bands - max_distance`` of the ``bands`` bands, every uint64 value's key:
    two values within ``max_distance`` bits share at least one (pigeonhole)."""
    cuts = _bands(bands)
    parts = [(values >> np.uint64(shift)) & np.uint64(mask) for shift, mask in cuts]
    for combination in itertools.combinations(range(bands), bands - max_distance):
        key = np.zeros(len(values), np.uint64)
        for band in combination:
            key = (key << np.uint64(cuts[band][1].bit_length())) | parts[band]
        yield key


def close_pairs(keys: np.ndarray, values: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)`` of entries that share a key and whose uint64 values are within ``max_distance``
    bits (each pair once per key it shares)."""
    order = np.argsort(keys)
    keys = keys[order]
    found_i, found_j = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for offset in range(1, len(keys)):  # entries sharing a key are contiguous: pair each with the next ones
        same = np.flatnonzero(keys[offset:] == keys[:-offset])
        if not same.size:
            break
        first, second = order[same], order[same + offset]
        close = np.bitwise_count(values[first] ^ values[second]) <= max_distance
        found_i.append(first[close])
        found_j.append(second[close])
    return np.concatenate(found_i), np.concatenate(found_j)


def keeper_walk(earlier: np.ndarray, later: np.ndarray, first_row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The near-duplicate rule on distinct values: (removed values, the kept value each is a near-duplicate of).

    ``earlier``/``later`` are the close pairs (as value indices, the earlier
    value's first row before the later one's), ``first_row`` each value's first
    row. In row order, a value is a near-duplicate of its earliest partner that
    is itself kept: the one-row-at-a-time rule, visiting only values in a pair.
    """
    order = np.lexsort((first_row[earlier], first_row[later]))  # by the later value, then its earliest partner
    removed = np.zeros(len(first_row), bool)
    keeper = np.full(len(first_row), -1, np.int64)
    decided = -1
    for value, partner in zip(later[order].tolist(), earlier[order].tolist()):
        if value != decided and not removed[partner]:
            removed[value] = True
            keeper[value] = partner
            decided = value
    return np.flatnonzero(removed), keeper[removed]


# -- CLIP embeddings (clip-retrieval layout) -> 64-bit SimHash ---------------------------------------


def embedding_files(embeddings_dir: str) -> list[str]:
    """The names of a clip-retrieval embedding folder's parts: ``img_emb/img_emb_NAME.npy`` beside
    ``metadata/metadata_NAME.parquet`` (same order, with ``key``), as ``laion-hf filter`` saves them."""
    fs, inner = filesystem(join(embeddings_dir, "metadata"))
    if not fs.isdir(inner):
        raise DedupError(f"{embeddings_dir}: no metadata/ folder of a clip-retrieval embedding set")
    names = sorted(
        p.rsplit("/", 1)[-1].removeprefix("metadata_").removesuffix(".parquet")
        for p in fs.ls(inner, detail=False) if p.endswith(".parquet")
    )
    if not names:
        raise DedupError(f"{embeddings_dir}: metadata/ holds no parquet files")
    return names


def embedding_signatures(embeddings_dir: str, name: str, seed: int = 0) -> pa.Table:
    """``(key, embedding_simhash)`` for every image embedding of one part of a clip-retrieval folder.

    SimHash (Charikar): the sign of 64 seeded random projections; the Hamming
    distance of two signatures / 64 estimates their angle / pi, so only
    8 bytes per image are ever held. Embeddings are memory-mapped and read
    in chunks.
    """
    path = join(embeddings_dir, "metadata", f"metadata_{name}.parquet")
    keys = pq.read_table(path, columns=["key"])["key"].cast(pa.string())
    embeddings = np.load(join(embeddings_dir, "img_emb", f"img_emb_{name}.npy"), mmap_mode="r")
    if embeddings.shape[0] != len(keys):
        raise DedupError(f"{path}: {len(keys)} rows but img_emb_{name}.npy holds {embeddings.shape[0]} embeddings")
    planes = np.random.default_rng(seed).standard_normal((embeddings.shape[1], 64)).astype(np.float32)
    weights = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))
    signatures = np.empty(len(keys), np.uint64)
    for start in range(0, len(keys), 65_536):
        chunk = np.asarray(embeddings[start:start + 65_536], dtype=np.float32)
        bits = (chunk @ planes) > 0
        signatures[start:start + len(chunk)] = (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
    return pa.table({"key": keys, EMBEDDING_SIMHASH: pa.array(signatures.view(np.int64))})


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
