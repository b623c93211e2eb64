"""Benchmark: the dedup decision (exact LAION hash + pHash within 4 bits) against faiss's multi-index hashing.

    .venv/bin/python bench/dedup.py [--rows 100000,1000000] [--runs 3] [--threads 1] [--rows-per-unit N]

Input: ``--rows`` signatures, as a LAION run has them: random 64-bit pHashes
for distinct images, plus near copies of earlier ones (5 %, 0-4 bits flipped:
re-encodes and resizes), identical copies (3 %, the same image at another URL)
and exact (url, caption) repeats (3 %, the same LAION hash).

Both sides in this interpreter, paired (A B A B), CPU and wall min/median/max:

- ours: :func:`laion_hf.steps.dedup_decision.decide`, the whole decision as
  the dedup step runs it (exact pass, near pass, keepers, the decision files
  per shard), from signature files of 10,000 rows a shard written beforehand
  (a real run has them), through the local runner in this process; its
  shuffle files are part of the time. ``--rows-per-unit`` cuts it into more
  units, as a cluster run would be;
- peer: what a user reaches for to find near-duplicate binary hashes, faiss's
  ``IndexBinaryMultiHash`` (``max_distance + 1`` tables of 12 bits, exact recall
  by pigeonhole), adding every hash and range-searching every hash. That is
  only the candidate search: it still leaves the exact pass and the greedy
  keeper walk to do, so the ratio flatters the peer.

Both run on ``--threads`` threads (faiss's OpenMP; numpy's sorts are single-threaded).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from laion_hf.runners.local import LocalRunner  # noqa: E402
from laion_hf.stages.duplicates import DEFAULT_MAX_DISTANCE  # noqa: E402
from laion_hf.steps.dedup_decision import DecisionPlan, decide  # noqa: E402


def signatures(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    phash = rng.integers(0, 2**64, rows, dtype=np.uint64)
    hashes = rng.integers(-(2**63), 2**63 - 1, rows, dtype=np.int64)
    kind = rng.random(rows)
    earlier = (rng.random(rows) * np.arange(rows)).astype(np.int64)
    near = kind < 0.05
    phash[near] = phash[earlier[near]]
    for _ in range(4):
        flip = near & (rng.random(rows) < 0.7)
        phash[flip] ^= np.uint64(1) << rng.integers(0, 64, int(flip.sum()), dtype=np.uint64)
    same = (kind >= 0.05) & (kind < 0.08)
    phash[same] = phash[earlier[same]]
    repeat = (kind >= 0.08) & (kind < 0.11)
    hashes[repeat] = hashes[earlier[repeat]]
    phash[repeat] = phash[earlier[repeat]]
    return pa.table({
        "shard": pa.array(np.char.mod("%05d", np.arange(rows) // 10_000)),
        "key": pa.array(np.char.mod("%09d", np.arange(rows))),
        "hash": pa.array(hashes),
        "phash": pa.array(phash.view(np.int64)),
    })


def write_signatures(table: pa.Table, directory: Path) -> tuple[list[str], list[int]]:
    """One signature file per shard, as the dedup step's first pass leaves them."""
    files, rows = [], []
    for shard in pc.unique(table["shard"]).to_pylist():
        part = table.filter(pc.equal(table["shard"], shard))
        files.append(str(directory / f"{shard}.parquet"))
        rows.append(part.num_rows)
        pq.write_table(part, files[-1])
    return files, rows


def ours(signatures: tuple[list[str], list[int]], scratch: Path, rows_per_unit: int | None) -> int:
    shutil.rmtree(scratch, ignore_errors=True)
    plan = DecisionPlan.plan(*signatures, str(scratch / "work"), max_distance=DEFAULT_MAX_DISTANCE,
                             rows_per_unit=rows_per_unit)
    return sum(decide(plan, str(scratch / "decisions"), LocalRunner(show_progress=False)).values())


def faiss_multihash(table: pa.Table) -> int:
    import faiss

    codes = np.ascontiguousarray(table["phash"].to_numpy().view(np.uint8).reshape(-1, 8))
    index = faiss.IndexBinaryMultiHash(64, DEFAULT_MAX_DISTANCE + 1, 64 // (DEFAULT_MAX_DISTANCE + 1))
    index.add(codes)
    lims, _, _ = index.range_search(codes, DEFAULT_MAX_DISTANCE + 1)  # distances below the radius
    return int(lims[-1] - len(codes))  # pairs found, each both ways, without the hashes themselves


def timed(function, table: pa.Table) -> tuple[float, float, int]:
    cpu, wall = time.process_time(), time.perf_counter()
    result = function(table)
    return time.process_time() - cpu, time.perf_counter() - wall, result


def summary(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows-per-unit", type=int, default=None, help="cut the decision into units this size")
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    print(f"# dedup decision vs faiss IndexBinaryMultiHash, {args.runs} paired runs, {args.threads} thread(s)")
    for rows in map(int, args.rows.split(",")):
        table = signatures(rows)
        folder = Path(tempfile.mkdtemp(prefix="bench-dedup-"))
        (folder / "signatures").mkdir()
        files = write_signatures(table, folder / "signatures")
        sides = (("ours", partial(ours, scratch=folder / "run", rows_per_unit=args.rows_per_unit)),
                 ("faiss", faiss_multihash))
        times: dict[str, list[tuple[float, float]]] = {"ours": [], "faiss": []}
        for _ in range(args.runs):
            for name, function in sides:
                cpu, wall, result = timed(function, files if name == "ours" else table)
                times[name].append((cpu, wall))
                print(f"{rows:>10,} {name:>5}: {cpu:7.2f} CPU s {wall:7.2f} s wall  ({result:,} "
                      f"{'rows removed' if name == 'ours' else 'close pairs, both ways'})", flush=True)
        for name in times:
            cpus, walls = [t[0] for t in times[name]], [t[1] for t in times[name]]
            print(f"{rows:>10,} {name:>5}: CPU s min/median/max {summary(cpus)}, wall {summary(walls)}")
        ratio_cpu = statistics.median(t[0] for t in times["faiss"]) / statistics.median(t[0] for t in times["ours"])
        ratio_wall = statistics.median(t[1] for t in times["faiss"]) / statistics.median(t[1] for t in times["ours"])
        print(f"{rows:>10,} speed (faiss time / ours): CPU {ratio_cpu:.2f}x, wall {ratio_wall:.2f}x")
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
