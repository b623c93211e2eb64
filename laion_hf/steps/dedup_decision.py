"""The dedup decision as a shuffle: which rows of a whole run are duplicates, and of which row.

The rule (:mod:`laion_hf.stages.duplicates`): rows in (shard, key) order; the
first row of each LAION hash is kept and its later rows are ``duplicate-hash``;
of the rest, a row whose pHash is within ``max_distance`` bits of an earlier
kept row is ``near-duplicate-phash`` of the earliest such row; then the same on
CLIP-embedding SimHashes. Every removed row names the row finally kept.

Every step below is a runner map over files (:mod:`laion_hf.io.shuffle`), one
unit per group of shards or per partition, sized by :meth:`DecisionPlan.plan`
so that no unit holds more than a few million rows however big the run. Rows
travel as *items*: a live row, or a *follower* (a removed row with the id and
key of the live row it follows); a follower always travels to the partition of
the row it follows, so when that row is removed in a later pass its followers
are re-pointed in the same unit.

1. :func:`number_rows`, per group of shards: each row's id is its position in
   (shard, key) order; items go to the partition of their LAION hash
   (with embeddings, first to the partition of their key:
   :func:`embedding_keys` and :func:`join_embeddings` add each row's SimHash);
2. :func:`exact`, per hash partition: the first row of each hash stays live,
   its later rows follow it;
3. per near pass (pHash, then SimHash), over partitions of the pass's value:

   a. :func:`band_keys`: the distinct values with their first row, and one
      record per band combination, to the partition of its key;
   b. :func:`close_pairs`, per band partition: pairs of values sharing a key
      within the distance;
   c. :func:`walk`, one unit: the keeper walk over all pairs (only
      near-duplicates have a pair, so they are few);
   d. :func:`keepers`: each removed value learns its keeper's key and
      next-pass value;
   e. :func:`apply`: rows become followers of their keeper, and every item
      moves on to the partition of the row it follows in the next pass;

4. :func:`write_decisions`, per group of shards: ``(key, duplicate_of,
   reason)`` per shard, what :class:`~laion_hf.stages.duplicates.DuplicateMarker` reads.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import mmh3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laion_hf.io.atomic import atomic_path, join
from laion_hf.io.shuffle import (
    consecutive_groups,
    group_members,
    partition_of,
    power_of_two,
    read_partition,
    write_partitioned,
)
from laion_hf.runners.base import Runner
from laion_hf.stages.duplicates import (
    DUPLICATE_HASH,
    EMBEDDING_SIMHASH,
    KEPT,
    NEAR_DUPLICATE_EMBEDDING,
    NEAR_DUPLICATE_PHASH,
    REASONS,
    band_count,
    embedding_signatures,
    keeper_walk,
)
from laion_hf.stages.duplicates import band_keys as value_band_keys
from laion_hf.stages.duplicates import close_pairs as pairs_sharing_keys

ROWS_PER_UNIT = 4_000_000  # ~250 MB of items (~60 bytes each), under 1 GB at a unit's peak
RECORDS_PER_ROW = 2  # band records (26 bytes each) a unit may hold per row of its budget: the same peak

ITEMS = pa.schema([
    ("row", pa.int64()), ("key", pa.string()), ("hash", pa.int64()), ("phash", pa.int64()),
    (EMBEDDING_SIMHASH, pa.int64()), ("keeper", pa.int64()), ("keeper_key", pa.string()), ("reason", pa.int8()),
])
_EMBEDDINGS = pa.schema([("key", pa.string()), (EMBEDDING_SIMHASH, pa.int64())])
_BANDS = pa.schema([("combination", pa.int16()), ("band_key", pa.uint64()), ("value", pa.uint64()),
                    ("first", pa.int64())])
_VALUES = pa.schema([("value", pa.uint64()), ("first", pa.int64()), ("key", pa.string()), ("next", pa.int64())])
_PAIRS = pa.schema([("earlier", pa.uint64()), ("earlier_first", pa.int64()), ("later", pa.uint64()),
                    ("later_first", pa.int64())])
_WALKED = pa.schema([("value", pa.uint64()), ("keeper_value", pa.uint64()), ("keeper", pa.int64())])
_KEEPERS = pa.schema([("value", pa.uint64()), ("keeper", pa.int64()), ("keeper_key", pa.string()),
                      ("keeper_next", pa.int64())])
DECISIONS = pa.schema([("key", pa.string()), ("duplicate_of", pa.string()), ("reason", pa.string())])


@dataclass(frozen=True)
class NearPass:
    """One near-duplicate pass: the column it compares, within how many bits, and its index's band count."""

    column: str
    max_distance: int
    reason: int
    bands: int

    @property
    def combinations(self) -> int:
        return math.comb(self.bands, self.bands - self.max_distance)


@dataclass(frozen=True)
class DecisionPlan:
    """One run's decision: its signature files (one per shard, in shard order) and their row counts, the
    near passes, the embedding parts, how shards are grouped and rows partitioned, and its scratch folder."""

    signatures: tuple[str, ...]
    rows: tuple[int, ...]
    work_dir: str
    passes: tuple[NearPass, ...] = ()
    embeddings_dir: str | None = None
    embedding_parts: tuple[str, ...] = ()
    group_starts: tuple[int, ...] = (0,)
    partitions: int = 1
    band_partitions: int = 1

    @classmethod
    def plan(cls, signatures: Sequence[str], rows: Sequence[int], work_dir: str, *, max_distance: int | None,
             embeddings_dir: str | None = None, embedding_parts: Sequence[str] = (),
             max_embedding_distance: int | None = None, rows_per_unit: int | None = None) -> DecisionPlan:
        """Groups of consecutive shards and power-of-two partitions sized so that no unit holds much more than
        ``rows_per_unit`` rows (default :data:`ROWS_PER_UNIT`), or :data:`RECORDS_PER_ROW` times as many band
        records."""
        rows_per_unit = rows_per_unit or ROWS_PER_UNIT
        total = sum(rows)
        passes = []
        if max_distance is not None:
            passes.append(NearPass("phash", max_distance, REASONS.index(NEAR_DUPLICATE_PHASH),
                                   band_count(max_distance, total)))
        if max_embedding_distance is not None:
            passes.append(NearPass(EMBEDDING_SIMHASH, max_embedding_distance,
                                   REASONS.index(NEAR_DUPLICATE_EMBEDDING), band_count(max_embedding_distance, total)))
        records = total * max((p.combinations for p in passes), default=0)
        return cls(tuple(signatures), tuple(rows), work_dir, tuple(passes), embeddings_dir, tuple(embedding_parts),
                   consecutive_groups(rows, rows_per_unit),
                   partitions=power_of_two(max(total, records / RECORDS_PER_ROW) / rows_per_unit),
                   band_partitions=power_of_two(records / RECORDS_PER_ROW / rows_per_unit))

    @property
    def groups(self) -> int:
        return len(self.group_starts)

    def group_files(self, group: int) -> range:
        return group_members(self.group_starts, len(self.signatures), group)

    def group_of(self, rows: np.ndarray) -> np.ndarray:
        """The group of shards each row id belongs to."""
        return np.searchsorted(self.offsets[list(self.group_starts)], rows, side="right") - 1

    @property
    def offsets(self) -> np.ndarray:
        """The id of each signature file's first row (and, last, the run's row count)."""
        return np.cumsum([0, *self.rows])

    def path(self, step: str, unit: int) -> str:
        return join(self.work_dir, step, f"{unit:05d}.arrow")

    def paths(self, step: str, units: int) -> list[str]:
        return [self.path(step, unit) for unit in range(units)]

    def numbered(self) -> list[str]:
        """The files of step 1's items (with their SimHashes, when embeddings are joined)."""
        if self.embeddings_dir is not None:
            return self.paths("joined", self.partitions)
        return self.paths("number", self.groups)

    def sources(self, near_pass: int) -> list[str]:
        """The files whose items a near pass (or, after the last, :func:`write_decisions`) reads."""
        if near_pass == 0:
            return self.paths("exact", self.partitions)
        return self.paths(f"pass-{near_pass - 1}/apply", self.partitions)

    def steps(self) -> list[tuple[str, int, Any]]:
        """(step name, units, map function) in the order a runner runs them; each function takes
        ``(unit, plan=...)`` (with the pass index bound for the near passes)."""
        steps: list[tuple[str, int, Any]] = [("number", self.groups, number_rows)]
        if self.embeddings_dir is not None:
            steps += [("embeddings", len(self.embedding_parts), embedding_keys),
                      ("joined", self.partitions, join_embeddings)]
        steps.append(("exact", self.partitions, exact))
        for index in range(len(self.passes)):
            for name, units, function in (("bands", self.partitions, band_keys),
                                          ("pairs", self.band_partitions, close_pairs), ("walk", 1, walk),
                                          ("keepers", self.partitions, keepers), ("apply", self.partitions, apply)):
                steps.append((f"pass-{index}/{name}", units, partial(function, near_pass=index)))
        return steps


def _key_hashes(keys: pa.Array) -> np.ndarray:
    return np.array([mmh3.hash64(key)[0] for key in keys.to_pylist()], np.int64).view(np.uint64)


def _numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """An int column's values (nulls as 0) as uint64, the domain of hashes and row ids alike."""
    return pc.fill_null(column, 0).to_numpy().view(np.uint64)


def _sorted_items(paths: Sequence[str], partition: int) -> pa.Table:
    items = read_partition(paths, partition, ITEMS)
    return items.take(pc.sort_indices(items["row"]))


def decide(plan: DecisionPlan, decisions_dir: str, runner: Runner) -> Counter[str]:
    """Run the plan's maps on ``runner`` (each resumable by its done markers) and write the decisions of every
    shard to ``decisions_dir``; the removed rows by reason."""
    for step, units, function in plan.steps():
        runner.map(range(units), partial(function, plan=plan), output_dir=join(plan.work_dir, step),
                   name_of=_unit_name, description=f"dedup: {step}")
    written = runner.map(range(plan.groups), partial(write_decisions, plan=plan, decisions_dir=decisions_dir),
                         output_dir=join(plan.work_dir, "decisions"), name_of=_unit_name, description="dedup: decide")
    removed: Counter[str] = Counter()
    for record in written.values():
        removed.update(record["removed"])
    return removed


def _unit_name(index: int) -> str:
    return f"{index:05d}"


# -- 1. row ids and embeddings -----------------------------------------------------------------------------


def number_rows(group: int, plan: DecisionPlan) -> dict[str, Any]:
    """Map: a group's rows as live items with their run-wide ids, to the partition of their hash (or key)."""
    offset = int(plan.offsets[plan.group_starts[group]])
    parts = []
    for file in plan.group_files(group):
        signatures = pq.read_table(plan.signatures[file]).sort_by("key")
        if signatures.num_rows != plan.rows[file]:
            raise RuntimeError(f"{plan.signatures[file]}: {signatures.num_rows} rows, planned {plan.rows[file]}")
        n = signatures.num_rows
        parts.append(pa.table({
            "row": pa.array(np.arange(offset, offset + n)), "key": signatures["key"], "hash": signatures["hash"],
            "phash": signatures["phash"], EMBEDDING_SIMHASH: signatures[EMBEDDING_SIMHASH]
            if EMBEDDING_SIMHASH in signatures.column_names else pa.nulls(n, pa.int64()),
            "keeper": pa.nulls(n, pa.int64()), "keeper_key": pa.nulls(n, pa.string()),
            "reason": pa.array(np.full(n, KEPT, np.int8)),
        }, schema=ITEMS))
        offset += n
    items = pa.concat_tables(parts) if parts else ITEMS.empty_table()
    if plan.embeddings_dir is not None:
        destination = partition_of(_key_hashes(items["key"]), plan.partitions)
    else:
        destination = _hash_partition(items, plan.partitions)
    write_partitioned(plan.path("number", group), items, destination, plan.partitions)
    return {"rows": items.num_rows}


def _hash_partition(items: pa.Table, partitions: int) -> np.ndarray:
    """Rows of one LAION hash together; a row without a hash matches nothing and goes by its id."""
    hashes = items["hash"]
    return partition_of(np.where(pc.is_valid(hashes).to_numpy(zero_copy_only=False), _numpy(hashes),
                                 _numpy(items["row"])), partitions)


def embedding_keys(part: int, plan: DecisionPlan) -> dict[str, Any]:
    """Map: one embedding part's ``(key, SimHash)`` to the partition of the key."""
    table = embedding_signatures(plan.embeddings_dir, plan.embedding_parts[part])
    write_partitioned(plan.path("embeddings", part), table, partition_of(_key_hashes(table["key"]), plan.partitions),
                      plan.partitions)
    return {"embeddings": table.num_rows}


def join_embeddings(partition: int, plan: DecisionPlan) -> dict[str, Any]:
    """Reduce: each row gets the SimHash of its key (the first one, if a key has several; null if none)."""
    items = _sorted_items(plan.paths("number", plan.groups), partition)
    embeddings = read_partition(plan.paths("embeddings", len(plan.embedding_parts)), partition, _EMBEDDINGS)
    _, first = np.unique(np.asarray(embeddings["key"].to_pylist(), object), return_index=True)
    embeddings = embeddings.take(pa.array(np.sort(first), pa.int64()))
    joined = items.drop_columns([EMBEDDING_SIMHASH]).join(embeddings, keys="key", join_type="left outer")
    items = joined.select(ITEMS.names).cast(ITEMS)
    items = items.take(pc.sort_indices(items["row"]))
    write_partitioned(plan.path("joined", partition), items, _hash_partition(items, plan.partitions), plan.partitions)
    return {"rows": items.num_rows}


# -- 2. exact duplicates -------------------------------------------------------------------------------------


def exact(partition: int, plan: DecisionPlan) -> dict[str, Any]:
    """Reduce: the later rows of each LAION hash follow its first row."""
    items = _sorted_items(plan.numbered(), partition)
    anchor = np.arange(items.num_rows)
    valid = np.flatnonzero(pc.is_valid(items["hash"]).to_numpy(zero_copy_only=False))
    _, first, inverse = np.unique(_numpy(items["hash"])[valid], return_index=True, return_inverse=True)
    anchor[valid] = valid[first[inverse]]  # items are in row order: np.unique's first index is the earliest row
    twins = int((anchor != np.arange(items.num_rows)).sum())
    moved = _follow(items, anchor, REASONS.index(DUPLICATE_HASH), plan, 0)
    _move_on(moved, plan, 0, plan.path("exact", partition))
    return {DUPLICATE_HASH: twins}


# -- 3. near duplicates ---------------------------------------------------------------------------------------


def band_keys(partition: int, plan: DecisionPlan, near_pass: int) -> dict[str, Any]:
    """Map: the partition's distinct values (first row, its key and next-pass value), and one band record per
    value and band combination, to the partition of its band key."""
    spec = plan.passes[near_pass]
    items = _sorted_items(plan.sources(near_pass), partition)
    eligible = np.flatnonzero(_live(items) & pc.is_valid(items[spec.column]).to_numpy(zero_copy_only=False))
    values, first = np.unique(_numpy(items[spec.column])[eligible], return_index=True)
    first = pa.array(eligible[first], pa.int64())  # items are in row order: the value's earliest row
    info = pa.table([values, items["row"].take(first), items["key"].take(first),
                     _next_values(items, plan, near_pass + 1).take(first)], schema=_VALUES)
    write_partitioned(plan.path(f"pass-{near_pass}/values", partition), info, np.zeros(len(values), np.int64), 1)
    keys = np.concatenate(list(value_band_keys(values, spec.bands, spec.max_distance)))
    combination = np.repeat(np.arange(spec.combinations, dtype=np.int16), len(values))
    records = pa.table([combination, keys, np.tile(values, spec.combinations),
                        np.tile(info["first"].to_numpy(), spec.combinations)], schema=_BANDS)
    destination = partition_of(keys ^ (combination.astype(np.uint64) << np.uint64(48)), plan.band_partitions)
    write_partitioned(plan.path(f"pass-{near_pass}/bands", partition), records, destination, plan.band_partitions)
    return {"values": len(values)}


def close_pairs(partition: int, plan: DecisionPlan, near_pass: int) -> dict[str, Any]:
    """Reduce: the pairs of values that share a band key of one combination and are within the distance,
    each once, the value with the earlier first row first."""
    spec = plan.passes[near_pass]
    records = read_partition(plan.paths(f"pass-{near_pass}/bands", plan.partitions), partition, _BANDS)
    combination, keys, values, first = (records[name].to_numpy() for name in _BANDS.names)
    if (np.diff(combination) < 0).any():  # records of several band-keys files: group them by combination
        order = np.argsort(combination, kind="stable")
        combination, keys, values, first = combination[order], keys[order], values[order], first[order]
    found = [np.empty((0, 2), np.int64)]
    for group in np.split(np.arange(len(combination)), np.flatnonzero(np.diff(combination)) + 1):
        i, j = pairs_sharing_keys(keys[group], values[group], spec.max_distance)
        found.append(np.stack([group[i], group[j]], axis=1))
    pairs = np.concatenate(found)
    pairs = np.where((first[pairs[:, 0]] < first[pairs[:, 1]])[:, None], pairs, pairs[:, ::-1])
    _, once = np.unique(np.stack([values[pairs[:, 0]], values[pairs[:, 1]]], axis=1), axis=0, return_index=True)
    earlier, later = pairs[once, 0], pairs[once, 1]
    table = pa.table([values[earlier], first[earlier], values[later], first[later]], schema=_PAIRS)
    write_partitioned(plan.path(f"pass-{near_pass}/pairs", partition), table, np.zeros(len(once), np.int64), 1)
    return {"pairs": len(once)}


def walk(unit: int, plan: DecisionPlan, near_pass: int) -> dict[str, Any]:
    """The one-node step: the keeper walk over every pair of the run (only near-duplicates have one); each
    removed value with its keeper value, to the partition of the keeper value."""
    pairs = read_partition(plan.paths(f"pass-{near_pass}/pairs", plan.band_partitions), 0, _PAIRS)
    values = np.concatenate([pairs["earlier"].to_numpy(), pairs["later"].to_numpy()])
    firsts = np.concatenate([pairs["earlier_first"].to_numpy(), pairs["later_first"].to_numpy()])
    distinct, index, inverse = np.unique(values, return_index=True, return_inverse=True)
    first_row = firsts[index]
    removed, keeper = keeper_walk(inverse[:pairs.num_rows], inverse[pairs.num_rows:], first_row)
    table = pa.table([distinct[removed], distinct[keeper], first_row[keeper]], schema=_WALKED)
    write_partitioned(plan.path(f"pass-{near_pass}/walk", unit), table,
                      partition_of(distinct[keeper], plan.partitions), plan.partitions)
    return {"removed": len(removed)}


def keepers(partition: int, plan: DecisionPlan, near_pass: int) -> dict[str, Any]:
    """Reduce: each removed value whose keeper value lives here learns the keeper's key and next-pass value,
    and goes to the partition of the removed value."""
    walked = read_partition([plan.path(f"pass-{near_pass}/walk", 0)], partition, _WALKED)
    info = read_partition([plan.path(f"pass-{near_pass}/values", partition)], 0, _VALUES)
    at = pa.array(np.searchsorted(info["value"].to_numpy(), walked["keeper_value"].to_numpy()), pa.int64())
    if not np.array_equal(info["first"].to_numpy()[at.to_numpy()], walked["keeper"].to_numpy()):
        raise RuntimeError(f"pass {near_pass}, partition {partition}: a keeper value is not where it was planned")
    table = pa.table([walked["value"], walked["keeper"], info["key"].take(at), info["next"].take(at)],
                     schema=_KEEPERS)
    write_partitioned(plan.path(f"pass-{near_pass}/keepers", partition), table,
                      partition_of(walked["value"].to_numpy(), plan.partitions), plan.partitions)
    return {"keepers": table.num_rows}


def apply(partition: int, plan: DecisionPlan, near_pass: int) -> dict[str, Any]:
    """Reduce: a removed value's rows follow its keeper, a repeated value's later rows its first row; followers
    of a row that is now removed follow its keeper; then every item moves on."""
    spec = plan.passes[near_pass]
    items = _sorted_items(plan.sources(near_pass), partition)
    removed = read_partition(plan.paths(f"pass-{near_pass}/keepers", plan.partitions), partition, _KEEPERS)
    eligible = np.flatnonzero(_live(items) & pc.is_valid(items[spec.column]).to_numpy(zero_copy_only=False))
    values, first, inverse = np.unique(_numpy(items[spec.column])[eligible], return_index=True, return_inverse=True)
    value_keeper = np.full(len(values), -1)  # a removed value's row of `removed`: its keeper, in another partition
    value_keeper[np.searchsorted(values, removed["value"].to_numpy())] = np.arange(removed.num_rows)
    anchor = np.arange(items.num_rows)
    anchor[eligible] = np.where(value_keeper[inverse] >= 0, items.num_rows + value_keeper[inverse],
                                eligible[first[inverse]])  # else a repeated value's rows follow its first row
    moved = _follow(items, anchor, spec.reason, plan, near_pass + 1, removed)
    _move_on(moved, plan, near_pass + 1, plan.path(f"pass-{near_pass}/apply", partition))
    return {REASONS[spec.reason]: int((moved[0]["reason"].to_numpy() == spec.reason).sum())}


# -- items: who follows whom, and where they go next ----------------------------------------------------------


def _follow(
    items: pa.Table, anchor: np.ndarray, reason: int, plan: DecisionPlan, next_pass: int,
    keepers: pa.Table = _KEEPERS.empty_table(),
) -> tuple[pa.Table, np.ndarray, pa.ChunkedArray]:
    """Live items follow their ``anchor`` with ``reason``: an index into ``items`` (itself, to stay live) or,
    from ``len(items)`` on, a row of ``keepers`` (a keeper in another partition); followers of an item that
    now follows another row follow that row too, keeping their own reason. Returns the items, and the row id
    and next-pass value of the live row each item now follows (its own, if live)."""
    rows, reasons = items["row"].to_numpy(), items["reason"].to_numpy()
    live = reasons == KEPT
    followers = np.flatnonzero(~live)
    followed = _numpy(items["keeper"]).view(np.int64)[followers]
    at = np.minimum(np.searchsorted(rows, followed), len(rows) - 1)  # items are in row order
    if not (live[at] & (rows[at] == followed)).all():
        raise RuntimeError("a follower arrived without the row it follows")
    anchor = anchor.copy()
    anchor[followers] = anchor[at]
    take = pa.array(anchor, pa.int64())
    keeper_row = np.concatenate([rows, keepers["keeper"].to_numpy()])[anchor]
    keeper_key = pa.chunked_array([*items["key"].chunks, *keepers["keeper_key"].chunks], pa.string()).take(take)
    keeper_next = pa.chunked_array([_next_values(items, plan, next_pass), *keepers["keeper_next"].chunks],
                                   pa.int64()).take(take)
    moved = anchor != np.arange(len(rows))
    mask = pa.array(moved)
    items = items.set_column(5, "keeper", pc.if_else(mask, pa.array(keeper_row), items["keeper"]))
    items = items.set_column(6, "keeper_key", pc.if_else(mask, keeper_key, items["keeper_key"]))
    items = items.set_column(7, "reason", pa.array(np.where(moved & live, np.int8(reason), reasons), pa.int8()))
    return items, keeper_row, keeper_next


def _next_values(items: pa.Table, plan: DecisionPlan, next_pass: int) -> pa.Array:
    """Each item's value in the pass ``next_pass`` (null after the last)."""
    if next_pass == len(plan.passes):
        return pa.nulls(items.num_rows, pa.int64())
    return items[plan.passes[next_pass].column].combine_chunks()


def _move_on(moved: tuple[pa.Table, np.ndarray, pa.Array], plan: DecisionPlan, next_pass: int, path: str) -> None:
    """Write items where pass ``next_pass`` reads them: each to the partition of its keeper's value (of its
    keeper's id when that value is null), so followers meet the row they follow; after the last pass, the
    removed rows to their group of shards."""
    items, keeper_row, keeper_next = moved
    if next_pass == len(plan.passes):
        removed = pc.not_equal(items["reason"], KEPT)
        items = items.filter(removed)
        write_partitioned(path, items, plan.group_of(items["row"].to_numpy()), plan.groups)
        return
    valid = pc.is_valid(keeper_next).to_numpy(zero_copy_only=False)
    destination = np.where(valid, _numpy(keeper_next), keeper_row.astype(np.int64).view(np.uint64))
    write_partitioned(path, items, partition_of(destination, plan.partitions), plan.partitions)


def _live(items: pa.Table) -> np.ndarray:
    return items["reason"].to_numpy() == KEPT


# -- 4. decisions per shard ---------------------------------------------------------------------------------------


def write_decisions(group: int, plan: DecisionPlan, decisions_dir: str) -> dict[str, Any]:
    """Map: the removed rows of a group's shards, as ``(key, duplicate_of, reason)`` per shard."""
    removed = _sorted_items(plan.sources(len(plan.passes)), group)
    bounds = np.searchsorted(removed["row"].to_numpy(), plan.offsets)
    reasons = pa.array(REASONS, pa.string()).take(removed["reason"]).combine_chunks()
    for file in plan.group_files(group):
        take = slice(bounds[file], bounds[file + 1])
        table = pa.table([removed["key"][take], removed["keeper_key"][take], reasons[take]], schema=DECISIONS)
        name = plan.signatures[file].rsplit("/", 1)[-1].removesuffix(".parquet")
        with atomic_path(join(decisions_dir, f"{name}.parquet")) as tmp:
            pq.write_table(table, tmp)
    return {"removed": dict(Counter(reasons.to_pylist()))}
