"""Exact and near-duplicate removal (normalised-text hash, then MinHash LSH), recording the kept member.

OIG had no near-duplicate removal, and its templating multiplies near copies
(one source row, paraphrased instructions). A :class:`Deduplicator` is fed the
batches of every constituent in build order and keeps the *first* member it
sees of each duplicate cluster; removed rows carry ``duplicate_of`` = the kept
row's id, so the removal is auditable. One instance shared by all constituents
dedups across them; one per constituent dedups within each.

Exact: lower-cased, punctuation-free, whitespace-collapsed text hashed with
mmh3 (128 bit). Near: datasketch MinHash over word 5-gram shingles, queried in a
MinHashLSH index at a Jaccard threshold (0.8 by default); only kept rows are
inserted, so a chain of near copies cannot drift away from the kept member.
Memory grows with the number of kept rows (a hash and an LSH entry each).
"""

from __future__ import annotations

import re

import mmh3
import numpy as np
import pyarrow as pa
from datasketch import MinHash, MinHashLSH

from laion_hf.stages.base import Stage, alive_mask, mark_dropped

DUPLICATE_OF = "duplicate_of"
_NON_WORD = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case, punctuation and whitespace removed: the form exact dedup compares."""
    return _SPACE.sub(" ", _NON_WORD.sub(" ", text.lower())).strip()


def shingles(text: str, size: int) -> set[bytes]:
    """Word ``size``-grams of the normalised text (the whole text when it is shorter)."""
    tokens = normalise(text).split()
    if len(tokens) <= size:
        return {" ".join(tokens).encode("utf-8")}
    return {" ".join(tokens[i : i + size]).encode("utf-8") for i in range(len(tokens) - size + 1)}


def shingle_hash(shingle: bytes) -> int:
    """32-bit MurmurHash3 of a shingle (datasketch's default SHA-1 costs more and buys nothing here)."""
    return mmh3.hash(shingle, signed=False)


class Deduplicator(Stage):
    """Mark live rows that duplicate an earlier kept row (``exact_duplicate`` / ``near_duplicate``)."""

    name = "dedup"

    def __init__(self, *, near: bool = True, threshold: float = 0.8, num_perm: int = 128, shingle_size: int = 5):
        self.near = near
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self.exact: dict[bytes, str] = {}
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm) if near else None
        # One permutation table for every signature (datasketch would otherwise rebuild it per MinHash).
        self._template = MinHash(num_perm=num_perm, seed=1, hashfunc=shingle_hash)

    def minhash(self, text: str) -> MinHash:
        signature = MinHash(
            num_perm=self.num_perm,
            seed=1,
            hashfunc=shingle_hash,
            permutations=self._template.permutations,
            scheme=self._template.scheme,
        )
        signature.update_batch(list(shingles(text, self.shingle_size)))
        return signature

    def add(self, row_id: str, text: str) -> None:
        """Index a row as kept without checking it (used to resume a build from finished constituents)."""
        self.exact.setdefault(mmh3.hash_bytes(normalise(text).encode("utf-8")), row_id)
        if self.lsh is not None and row_id not in self.lsh:
            self.lsh.insert(row_id, self.minhash(text))

    def __call__(self, batch: pa.Table) -> pa.Table:
        alive = alive_mask(batch).to_pylist()
        ids = batch["id"].to_pylist()
        texts = batch["text"].to_pylist()
        duplicate_of: list[str | None] = [None] * batch.num_rows
        exact = np.zeros(batch.num_rows, dtype=bool)
        near = np.zeros(batch.num_rows, dtype=bool)
        for row, live in enumerate(alive):
            if not live:
                continue
            key = mmh3.hash_bytes(normalise(texts[row]).encode("utf-8"))
            if key in self.exact:
                exact[row], duplicate_of[row] = True, self.exact[key]
                continue
            if self.lsh is not None:
                signature = self.minhash(texts[row])
                matches = self.lsh.query(signature)
                if matches:
                    near[row], duplicate_of[row] = True, min(matches)
                    continue
                self.lsh.insert(ids[row], signature)
            self.exact[key] = ids[row]
        batch = mark_dropped(batch, pa.array(exact), "exact_duplicate")
        batch = mark_dropped(batch, pa.array(near), "near_duplicate")
        column = pa.array(duplicate_of, pa.string())
        if DUPLICATE_OF in batch.column_names:
            return batch.set_column(batch.column_names.index(DUPLICATE_OF), DUPLICATE_OF, column)
        return batch.append_column(DUPLICATE_OF, column)
