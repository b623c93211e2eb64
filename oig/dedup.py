"""Exact and near-duplicate removal at any size: MinHash signatures and LSH bands on disk, resolved per partition.

OIG had no near-duplicate removal, and its templating multiplies near copies
(one source row, paraphrased instructions). The rule: in build order, a live row
is an ``exact_duplicate`` if its normalised text equals an earlier *kept* row's,
and a ``near_duplicate`` if an earlier kept row shares an LSH band with it and
their MinHash signatures agree on at least ``threshold`` of the permutations
(candidates are verified, not trusted). Removed rows carry ``duplicate_of``, the
kept row's id (the most similar one; ties go to the earliest). Only kept rows
count as earlier members, so a chain of near copies cannot drift away from the
kept member.

How it scales (nothing grows in memory with the number of kept rows):

- :class:`Signer` (stateless, runs in the worker pool) adds each live row's exact
  key (mmh3 128-bit hash of the lower-cased, punctuation-free,
  whitespace-collapsed text) and its datasketch MinHash over word 5-grams;
- :class:`ConstituentIndex` appends, per live row, the signature to a flat file
  and the exact key to one of :data:`PARTITIONS` files chosen by its top bits;
- :meth:`ConstituentIndex.resolve` loads one partition at a time: exact keys
  are grouped by sorting; band keys (one 64-bit hash per LSH band, the band
  count and width as datasketch's ``MinHashLSH`` picks them) are grouped the
  same way and every group yields candidate pairs, verified against the
  signatures read back from disk. Partitions are independent, so they run in
  the build's process pool. A last pass in build order applies the rule above
  to the (few) rows that have a candidate;
- :meth:`ConstituentIndex.commit` keeps the kept rows' partition entries and
  signatures on disk as a *store*, which later constituents of the same scope
  are resolved against (a resumed build reloads finished stores).

Memory is one partition at a time plus 9 bytes per live row of the constituent
being resolved; disk is ``4 * num_perm`` bytes per live row plus 24 bytes per
exact key and 16 per band entry.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import mmh3
import numpy as np
import pyarrow as pa
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from laion_hf.core.stage import Stage, alive_mask, mark_dropped
from laion_hf.io.atomic import mark_done, read_done

DUPLICATE_OF = "duplicate_of"
DEDUP_KEY = "dedup_key"
MINHASH = "minhash"
KEEP, EXACT, NEAR = 0, 1, 2
REASONS = {EXACT: "exact_duplicate", NEAR: "near_duplicate"}
#: Files per kind of entry; a row's partition is the top bits of its key.
PARTITIONS = 64
_PARTITION_SHIFT = np.uint64(64 - 6)
#: A band group compares each member with at most this many earlier members (the earliest ones, which are
#: the likeliest to be kept); a group this large is one cluster of near copies in practice.
MAX_CANDIDATES_PER_GROUP = 64
#: A row reference: store number << 40 | row number within the store (its live rows in build order).
_REF_BITS = 40
_EXACT_ENTRY = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("ref", "<i8")])
_BAND_ENTRY = np.dtype([("key", "<u8"), ("ref", "<i8")])
_EDGE = np.dtype([("row", "<i8"), ("candidate", "<i8"), ("similarity", "<f4")])
_NON_WORD = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case, punctuation and whitespace removed: the form exact dedup compares."""
    return _SPACE.sub(" ", _NON_WORD.sub(" ", text.lower())).strip()


def shingles(normalised: str, size: int) -> set[bytes]:
    """Word ``size``-grams of normalised text (the whole text when it is shorter)."""
    tokens = normalised.split()
    if len(tokens) <= size:
        return {" ".join(tokens).encode("utf-8")}
    return {" ".join(tokens[i : i + size]).encode("utf-8") for i in range(len(tokens) - size + 1)}


def shingle_hash(shingle: bytes) -> int:
    """32-bit MurmurHash3 of a shingle (datasketch's default SHA-1 costs more and buys nothing here)."""
    return mmh3.hash(shingle, signed=False)


class Signer(Stage):
    """Add the exact key and the MinHash signature of every live row (stateless: runs in the pool)."""

    name = "signature"

    def __init__(self, num_perm: int = 128, shingle_size: int = 5):
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self._template: MinHash | None = None

    def __getstate__(self) -> dict:
        return {"num_perm": self.num_perm, "shingle_size": self.shingle_size, "_template": None}

    def template(self) -> MinHash:
        """An empty MinHash whose permutation table every signature shares."""
        if self._template is None:
            self._template = MinHash(num_perm=self.num_perm, seed=1, hashfunc=shingle_hash)
        return self._template

    def sign(self, text: str) -> tuple[bytes, np.ndarray]:
        normalised = normalise(text)
        template = self.template()
        signature = MinHash(
            num_perm=self.num_perm, seed=1, hashfunc=shingle_hash, permutations=template.permutations, scheme=template.scheme
        )
        signature.update_batch(list(shingles(normalised, self.shingle_size)))
        return mmh3.hash_bytes(normalised.encode("utf-8")), signature.hashvalues

    def __call__(self, batch: pa.Table) -> pa.Table:
        keys: list[bytes | None] = []
        signatures: list[np.ndarray | None] = []
        for live, text in zip(alive_mask(batch).to_pylist(), batch["text"].to_pylist(), strict=True):
            key, values = self.sign(text) if live else (None, None)
            keys.append(key)
            signatures.append(values)
        present = [s for s in signatures if s is not None]
        flat = np.concatenate(present).astype(np.uint32) if present else np.zeros(0, np.uint32)
        offsets = np.cumsum([0] + [self.num_perm if s is not None else 0 for s in signatures]).astype(np.int32)
        mask = pa.array([s is None for s in signatures])
        signature_array = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.uint32()), mask=mask)
        for name, array in ((DEDUP_KEY, pa.array(keys, pa.binary(16))), (MINHASH, signature_array)):
            if name in batch.column_names:
                batch = batch.set_column(batch.column_names.index(name), name, array)
            else:
                batch = batch.append_column(name, array)
        return batch


@dataclass(frozen=True)
class DedupOptions:
    """How a build dedups: near duplicates or exact only, the Jaccard threshold, MinHash permutations, shingle words."""

    near: bool = True
    threshold: float = 0.8
    num_perm: int = 128
    shingle_size: int = 5

    @cached_property
    def bands(self) -> tuple[int, int]:
        """(bands, rows per band): datasketch's MinHashLSH choice for this threshold and permutation count."""
        return _optimal_param(self.threshold, self.num_perm, 0.5, 0.5)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per (row, band): the band's ``rows`` values and the band number, mixed (FNV-1a + fmix64)."""
    values = signatures[:, : bands * rows].astype(np.uint64).reshape(len(signatures), bands, rows)
    keys = np.broadcast_to(np.arange(1, bands + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15), values.shape[:2]).copy()
    keys ^= np.uint64(0xCBF29CE484222325)
    for column in range(rows):
        keys ^= values[:, :, column]
        keys *= np.uint64(0x100000001B3)
    keys ^= keys >> np.uint64(33)
    keys *= np.uint64(0xFF51AFD7ED558CCD)
    keys ^= keys >> np.uint64(33)
    return keys


def _store_of(refs: np.ndarray) -> np.ndarray:
    return refs >> _REF_BITS


def _row_of(refs: np.ndarray) -> np.ndarray:
    return refs & ((1 << _REF_BITS) - 1)


class _Store:
    """One constituent's files in a dedup scope: signatures and ids of its live rows, partitions of its kept rows."""

    def __init__(self, folder: Path, number: int, num_perm: int):
        self.folder = folder
        self.number = number
        self.num_perm = num_perm

    def path(self, kind: str, partition: int | None = None) -> Path:
        return self.folder / (kind if partition is None else f"{kind}-{partition:02d}.bin")

    def signatures(self) -> np.ndarray:
        path = self.path("signatures.u32")
        if path.stat().st_size == 0:
            return np.zeros((0, self.num_perm), np.uint32)
        return np.memmap(path, dtype=np.uint32, mode="r").reshape(-1, self.num_perm)

    def ids(self, rows: np.ndarray) -> list[str]:
        with pa.memory_map(str(self.path("ids.arrow"))) as source:
            return pa.ipc.open_file(source).read_all()["id"].take(pa.array(rows)).to_pylist()

    @property
    def complete(self) -> bool:
        return read_done(str(self.folder), "store") is not None


def _read_entries(folders: Iterable[Path], name: str, dtype: np.dtype, first_number: int = 0) -> np.ndarray:
    """One partition file of each store folder, its refs renumbered to the folder's place in the scope."""
    parts = []
    for number, folder in enumerate(folders, start=first_number):
        if (folder / name).exists():
            entries = np.fromfile(folder / name, dtype=dtype)
            entries["ref"] = (number << _REF_BITS) + _row_of(entries["ref"])
            parts.append(entries)
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _write_partitions(folder: Path, kind: str, entries: np.ndarray, keys: np.ndarray) -> None:
    """Append entries to ``kind-PP.bin`` by the top bits of their key."""
    parts = (keys >> _PARTITION_SHIFT).astype(np.int64)
    order = np.argsort(parts, kind="stable")
    bounds = np.searchsorted(parts[order], np.arange(PARTITIONS + 1))
    for p in range(PARTITIONS):
        if bounds[p] < bounds[p + 1]:
            with open(folder / f"{kind}-{p:02d}.bin", "ab") as f:
                f.write(entries[order[bounds[p] : bounds[p + 1]]].tobytes())


class DedupScope:
    """The disk-backed index of one dedup scope (the whole build, or one constituent): its finished stores."""

    def __init__(self, folder: str | Path, options: DedupOptions):
        self.folder = Path(folder)
        self.options = options
        self.signer = Signer(options.num_perm, options.shingle_size)
        self.stores: list[_Store] = []

    def _store(self, name: str) -> _Store:
        return _Store(self.folder / name, len(self.stores), self.options.num_perm)

    def load(self, name: str) -> bool:
        """Register a finished constituent's store (resuming a build); False if it is absent or incomplete."""
        store = self._store(name)
        if not store.complete:
            return False
        self.stores.append(store)
        return True

    def open(self, name: str) -> ConstituentIndex:
        """Start indexing a constituent (whatever a killed run left in its folder is discarded)."""
        store = self._store(name)
        shutil.rmtree(store.folder, ignore_errors=True)
        store.folder.mkdir(parents=True)
        return ConstituentIndex(self, store)

    def ids(self, refs: np.ndarray, extra: _Store | None = None) -> list[str]:
        """The row ids of ``refs`` (rows of finished stores, or of ``extra``, the store being built)."""
        stores = {s.number: s for s in [*self.stores, *([extra] if extra else [])]}
        ids: list[str] = [""] * len(refs)
        numbers = _store_of(refs)
        for number in np.unique(numbers):
            positions = np.flatnonzero(numbers == number)
            for position, value in zip(positions, stores[int(number)].ids(_row_of(refs[positions])), strict=True):
                ids[position] = value
        return ids


@dataclass
class Decisions:
    """Per live row of a constituent (build order): ``reason`` (KEEP / EXACT / NEAR) and the kept row it duplicates."""

    reason: np.ndarray
    target: np.ndarray


class ConstituentIndex:
    """Collects one constituent's live rows, resolves them against the scope, and becomes a store."""

    def __init__(self, scope: DedupScope, store: _Store):
        self.scope = scope
        self.store = store
        self.rows = 0
        self._signatures = open(store.path("signatures.u32"), "wb")
        self._ids = pa.ipc.new_file(str(store.path("ids.arrow")), pa.schema([("id", pa.string())]))

    def add(self, batch: pa.Table) -> None:
        """Record the signed live rows of a batch (in build order)."""
        live = batch.filter(alive_mask(batch))
        if live.num_rows == 0:
            return
        signatures = live[MINHASH].combine_chunks().flatten().to_numpy().astype(np.uint32)
        self._signatures.write(signatures.tobytes())
        keys = np.frombuffer(b"".join(live[DEDUP_KEY].to_pylist()), dtype="<u8").reshape(-1, 2)
        entries = np.empty(live.num_rows, _EXACT_ENTRY)
        entries["hi"], entries["lo"] = keys[:, 0], keys[:, 1]
        entries["ref"] = (self.store.number << _REF_BITS) + np.arange(self.rows, self.rows + live.num_rows)
        _write_partitions(self.store.folder, "new-exact", entries, entries["hi"])
        self._ids.write_table(live.select(["id"]))
        self.rows += live.num_rows

    def resolve(self, map_partitions: Callable = map) -> Decisions:
        """Decide every live row; ``map_partitions`` runs the per-partition work (``map`` or a pool's ``map``)."""
        self._signatures.close()
        self._ids.close()
        n, number = self.rows, self.store.number
        reason = np.zeros(n, np.int8)
        target = np.full(n, -1, np.int64)
        earlier = [s.folder for s in self.scope.stores]
        # exact: every row repeating a key points at the key's first row (an earlier store's, or its own constituent's)
        representative = np.full(n, -1, np.int64)
        jobs = [(earlier, self.store.folder, number, p) for p in range(PARTITIONS)]
        for rows, refs in map_partitions(_exact_partition, jobs):
            representative[rows] = refs
        from_store = (representative >= 0) & (_store_of(representative) < number)
        reason[from_store], target[from_store] = EXACT, representative[from_store]
        later_copy = (representative >= 0) & ~from_store
        edges = np.zeros(0, _EDGE)
        if self.scope.options.near:
            self._write_band_entries(representative < 0)
            folders = [*earlier, self.store.folder]
            near_jobs = [(earlier, folders, self.store.folder, number, p, self.scope.options) for p in range(PARTITIONS)]
            edges = np.concatenate([edges, *map_partitions(_near_partition, near_jobs)])
        _greedy(reason, target, representative, later_copy, edges, number)
        return Decisions(reason, target)

    def _write_band_entries(self, candidates: np.ndarray, chunk: int = 65_536) -> None:
        """LSH band keys of the rows that may be near duplicates, partitioned; signatures read a chunk at a time."""
        bands, rows = self.scope.options.bands
        row_bytes = 4 * self.scope.options.num_perm
        with open(self.store.path("signatures.u32"), "rb") as f:
            for start in range(0, self.rows, chunk):
                block = np.fromfile(f, dtype=np.uint32, count=chunk * self.scope.options.num_perm).reshape(-1, row_bytes // 4)
                selected = np.flatnonzero(candidates[start : start + len(block)])
                if len(selected) == 0:
                    continue
                keys = band_keys(block[selected], bands, rows)
                entries = np.empty(keys.size, _BAND_ENTRY)
                entries["key"] = keys.ravel()
                entries["ref"] = np.repeat((self.store.number << _REF_BITS) + start + selected, bands)
                _write_partitions(self.store.folder, "new-bands", entries, entries["key"])

    def commit(self, decisions: Decisions) -> None:
        """Keep the kept rows' entries as this constituent's store, for later constituents of the scope."""
        kept = decisions.reason == KEEP
        for kind, dtype in (("exact", _EXACT_ENTRY), ("bands", _BAND_ENTRY)):
            for p in range(PARTITIONS):
                path = self.store.path(f"new-{kind}", p)
                if path.exists():
                    entries = np.fromfile(path, dtype=dtype)
                    entries[kept[_row_of(entries["ref"])]].tofile(self.store.path(kind, p))
                    path.unlink()
        mark_done(str(self.store.folder), "store", {"rows": self.rows, "kept": int(kept.sum())})
        self.scope.stores.append(self.store)


def _exact_partition(job: tuple[list[Path], Path, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the new constituent (in one key partition) that repeat an earlier key, and that key's first row."""
    earlier, folder, number, partition = job
    entries = np.concatenate(
        [
            _read_entries(earlier, f"exact-{partition:02d}.bin", _EXACT_ENTRY),
            _read_entries([folder], f"new-exact-{partition:02d}.bin", _EXACT_ENTRY, number),
        ]
    )
    if len(entries) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    entries = entries[np.lexsort((entries["ref"], entries["lo"], entries["hi"]))]
    starts = np.ones(len(entries), bool)
    starts[1:] = (entries["hi"][1:] != entries["hi"][:-1]) | (entries["lo"][1:] != entries["lo"][:-1])
    first = entries["ref"][np.maximum.accumulate(np.where(starts, np.arange(len(entries)), 0))]
    repeats = ~starts & (_store_of(entries["ref"]) == number)
    return _row_of(entries["ref"][repeats]), first[repeats]


def _near_partition(job: tuple[list[Path], list[Path], Path, int, int, DedupOptions]) -> np.ndarray:
    """Verified candidate pairs (new row, earlier row, similarity) from the band groups of one partition."""
    earlier, folders, folder, number, partition, options = job
    new = _read_entries([folder], f"new-bands-{partition:02d}.bin", _BAND_ENTRY, number)
    if len(new) == 0:
        return np.zeros(0, _EDGE)
    entries = np.concatenate([_read_entries(earlier, f"bands-{partition:02d}.bin", _BAND_ENTRY), new])
    entries = entries[np.lexsort((entries["ref"], entries["key"]))]
    starts = np.flatnonzero(np.r_[True, entries["key"][1:] != entries["key"][:-1]])
    ends = np.r_[starts[1:], len(entries)]
    groups = ends - starts > 1
    rows, candidates = [], []
    for start, end in zip(starts[groups].tolist(), ends[groups].tolist(), strict=True):
        refs = entries["ref"][start:end]
        for position in np.flatnonzero(_store_of(refs) == number).tolist():
            if position:
                earlier_refs = refs[: min(position, MAX_CANDIDATES_PER_GROUP)]
                rows.append(np.full(len(earlier_refs), _row_of(refs[position])))
                candidates.append(earlier_refs)
    if not rows:
        return np.zeros(0, _EDGE)
    pairs = np.unique(np.stack([np.concatenate(rows), np.concatenate(candidates)], axis=1), axis=0)
    similarity = _similarity(pairs[:, 0], pairs[:, 1], folders, number, options.num_perm)
    verified = similarity >= options.threshold
    edges = np.empty(int(verified.sum()), _EDGE)
    edges["row"], edges["candidate"], edges["similarity"] = pairs[verified, 0], pairs[verified, 1], similarity[verified]
    return edges


def _similarity(
    rows: np.ndarray, candidates: np.ndarray, folders: list[Path], number: int, num_perm: int, chunk: int = 16_384
) -> np.ndarray:
    """Estimated Jaccard similarity (share of equal MinHash values) of each (new row, candidate) pair."""
    stores = [_Store(folder, i, num_perm) for i, folder in enumerate(folders)]
    similarity = np.empty(len(rows), np.float32)
    for start in range(0, len(rows), chunk):  # fresh memory maps per chunk keep resident pages bounded
        mine = np.asarray(stores[number].signatures()[rows[start : start + chunk]])
        theirs = np.empty_like(mine)
        refs = candidates[start : start + chunk]
        for store_number in np.unique(_store_of(refs)).tolist():
            where = _store_of(refs) == store_number
            theirs[where] = stores[store_number].signatures()[_row_of(refs[where])]
        similarity[start : start + chunk] = (mine == theirs).mean(axis=1)
    return similarity


def _greedy(
    reason: np.ndarray, target: np.ndarray, representative: np.ndarray, later_copy: np.ndarray, edges: np.ndarray, number: int
) -> None:
    """Apply the rule in build order to the rows that have a candidate (every other row is kept)."""
    edges = edges[np.lexsort((edges["candidate"], -edges["similarity"], edges["row"]))]
    rows = np.union1d(np.flatnonzero(later_copy), edges["row"])
    firsts = np.searchsorted(edges["row"], rows)
    lasts = np.searchsorted(edges["row"], rows, side="right")
    for row, first_edge, last_edge in zip(rows.tolist(), firsts.tolist(), lasts.tolist(), strict=True):
        if later_copy[row]:
            first = int(_row_of(representative[row]))
            if reason[first] == KEEP:
                reason[row], target[row] = EXACT, representative[row]
            else:  # the same text as a removed row: a near copy of the row that one duplicates
                reason[row], target[row] = NEAR, target[first]
            continue
        for candidate in edges["candidate"][first_edge:last_edge].tolist():
            if candidate >> _REF_BITS != number or reason[candidate & ((1 << _REF_BITS) - 1)] == KEEP:
                reason[row], target[row] = NEAR, candidate
                break


class DuplicateMarker(Stage):
    """Marks a constituent's rows with its resolved :class:`Decisions` and adds ``duplicate_of`` (the kept row's id).

    Fed the constituent's batches in build order; live rows are matched to
    decisions by their position among live rows.
    """

    name = "dedup"

    def __init__(self, decisions: Decisions, scope: DedupScope, index: ConstituentIndex):
        self.decisions = decisions
        self.scope = scope
        self.index = index
        self._next = 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        live_rows = np.flatnonzero(alive_mask(batch).to_numpy(zero_copy_only=False))
        positions = np.arange(self._next, self._next + len(live_rows))
        self._next += len(live_rows)
        reason = np.zeros(batch.num_rows, np.int8)
        reason[live_rows] = self.decisions.reason[positions]
        duplicate_of: list[Any] = [None] * batch.num_rows
        targets = self.decisions.target[positions[reason[live_rows] != KEEP]]
        for row, kept_id in zip(np.flatnonzero(reason != KEEP).tolist(), self.scope.ids(targets, self.index.store), strict=True):
            duplicate_of[row] = kept_id
        for code, label in REASONS.items():
            batch = mark_dropped(batch, pa.array(reason == code), label)
        column = pa.array(duplicate_of, pa.string())
        if DUPLICATE_OF in batch.column_names:
            return batch.set_column(batch.column_names.index(DUPLICATE_OF), DUPLICATE_OF, column)
        return batch.append_column(DUPLICATE_OF, column)
