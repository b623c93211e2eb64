"""Exact and near-duplicate removal (normalised-text hash, then MinHash LSH), recording the kept member.

OIG had no near-duplicate removal, and its templating multiplies near copies
(one source row, paraphrased instructions). Two stages:

- :class:`Signer` (stateless, runs in the worker pool): per live row, the exact
  key (mmh3 128-bit hash of the lower-cased, punctuation-free,
  whitespace-collapsed text) and a datasketch MinHash signature over word
  5-gram shingles;
- :class:`Deduplicator` (stateful, one process): fed every constituent's batches
  in build order, it keeps the *first* member of each duplicate cluster. A row
  is an ``exact_duplicate`` if its key was kept before, a ``near_duplicate`` if
  the MinHashLSH index returns a kept row whose estimated Jaccard similarity
  reaches the threshold (LSH candidates are verified, not trusted). Removed rows
  carry ``duplicate_of`` = the kept row's id. Only kept rows enter the index, so
  a chain of near copies cannot drift away from the kept member.

One Deduplicator shared by all constituents dedups across them; one per
constituent dedups within each. Memory grows with the number of kept rows
(the key, the signature and its LSH bands: about 1.5 KB per row at 128 permutations).
"""

from __future__ import annotations

import re

import mmh3
import numpy as np
import pyarrow as pa
from datasketch import MinHash, MinHashLSH

from laion_hf.stages.base import Stage, alive_mask, mark_dropped

DUPLICATE_OF = "duplicate_of"
DEDUP_KEY = "dedup_key"
MINHASH = "minhash"
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

    def minhash(self, normalised: str) -> MinHash:
        template = self.template()
        signature = MinHash(
            num_perm=self.num_perm,
            seed=1,
            hashfunc=shingle_hash,
            permutations=template.permutations,
            scheme=template.scheme,
        )
        signature.update_batch(list(shingles(normalised, self.shingle_size)))
        return signature

    def sign(self, text: str) -> tuple[bytes, np.ndarray]:
        normalised = normalise(text)
        return mmh3.hash_bytes(normalised.encode("utf-8")), self.minhash(normalised).hashvalues

    def __call__(self, batch: pa.Table) -> pa.Table:
        keys: list[bytes | None] = []
        signatures: list[np.ndarray | None] = []
        for live, text in zip(alive_mask(batch).to_pylist(), batch["text"].to_pylist(), strict=True):
            key, values = self.sign(text) if live else (None, None)
            keys.append(key)
            signatures.append(values)
        flat = np.concatenate([s for s in signatures if s is not None]) if any(s is not None for s in signatures) else []
        offsets = np.cumsum([0] + [self.num_perm if s is not None else 0 for s in signatures]).astype(np.int32)
        mask = pa.array([s is None for s in signatures])
        signature_array = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.uint32()), mask=mask)
        for name, array in ((DEDUP_KEY, pa.array(keys, pa.binary(16))), (MINHASH, signature_array)):
            if name in batch.column_names:
                batch = batch.set_column(batch.column_names.index(name), name, array)
            else:
                batch = batch.append_column(name, array)
        return batch


class Deduplicator(Stage):
    """Mark live rows that duplicate an earlier kept row (``exact_duplicate`` / ``near_duplicate``)."""

    name = "dedup"

    def __init__(self, *, near: bool = True, threshold: float = 0.8, num_perm: int = 128, shingle_size: int = 5):
        self.near = near
        self.threshold = threshold
        self.signer = Signer(num_perm, shingle_size)
        self.exact: dict[bytes, str] = {}
        self.signatures: dict[str, np.ndarray] = {}
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm) if near else None

    def _as_minhash(self, values: np.ndarray) -> MinHash:
        template = self.signer.template()
        return MinHash(
            seed=1, hashfunc=shingle_hash, hashvalues=values, permutations=template.permutations, scheme=template.scheme
        )

    def add(self, row_id: str, text: str) -> None:
        """Index a row as kept without checking it (used to resume a build from finished constituents)."""
        key, values = self.signer.sign(text)
        self._keep(row_id, key, np.asarray(values, dtype=np.uint32))

    def _keep(self, row_id: str, key: bytes, values: np.ndarray, signature: MinHash | None = None) -> None:
        self.exact.setdefault(key, row_id)
        if self.lsh is not None and row_id not in self.signatures:
            self.signatures[row_id] = values
            self.lsh.insert(row_id, signature or self._as_minhash(values))

    def _nearest(self, values: np.ndarray, signature: MinHash) -> str | None:
        """The most similar kept row at or above the threshold (ties: the smallest id), or None."""
        best: tuple[float, str] | None = None
        for candidate in self.lsh.query(signature):
            similarity = float(np.mean(self.signatures[candidate] == values))
            if similarity >= self.threshold and (best is None or (-similarity, candidate) < (-best[0], best[1])):
                best = (similarity, candidate)
        return best[1] if best else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        if MINHASH not in batch.column_names:
            batch = self.signer(batch)
        alive = alive_mask(batch).to_pylist()
        ids = batch["id"].to_pylist()
        keys = batch[DEDUP_KEY].to_pylist()
        signatures = batch[MINHASH].combine_chunks()
        duplicate_of: list[str | None] = [None] * batch.num_rows
        exact = np.zeros(batch.num_rows, dtype=bool)
        near = np.zeros(batch.num_rows, dtype=bool)
        for row, live in enumerate(alive):
            if not live:
                continue
            if keys[row] in self.exact:
                exact[row], duplicate_of[row] = True, self.exact[keys[row]]
                continue
            values = signatures[row].values.to_numpy(zero_copy_only=False)
            signature = self._as_minhash(values) if self.lsh is not None else None
            if signature is not None:
                match = self._nearest(values, signature)
                if match is not None:
                    near[row], duplicate_of[row] = True, match
                    continue
            self._keep(ids[row], keys[row], values, signature)
        batch = mark_dropped(batch, pa.array(exact), "exact_duplicate")
        batch = mark_dropped(batch, pa.array(near), "near_duplicate")
        column = pa.array(duplicate_of, pa.string())
        if DUPLICATE_OF in batch.column_names:
            return batch.set_column(batch.column_names.index(DUPLICATE_OF), DUPLICATE_OF, column)
        return batch.append_column(DUPLICATE_OF, column)
