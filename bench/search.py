"""Benchmark ``laion-hf index`` / search against exact numpy search on the same vectors, in one run.

Generated L2-normalised vectors are written as a clip-retrieval folder (fp16,
as ``laion-hf filter`` writes them), then:

* ours: :func:`laion_hf.search.index.build_index` (factory by size, training, adding,
  tuning, recall measurement; all included in the build time), then one query at a
  time through the opened, memory-mapped index;
* exact: the vectors read into one float32 matrix (its "build"), then one query at a
  time as ``matrix @ q`` + ``argpartition`` (what a user without an index does).

Both use the same number of threads (faiss OpenMP and numpy's BLAS, set before
import). Query latency is wall time per query, min/median/max over ``--runs`` runs
of ``--queries`` held-out queries; recall@10 of ours is measured against the exact
answer of the same queries.

    .venv/bin/python bench/search.py [--rows 1000000] [--dim 512] [--kind clustered|isotropic] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--kind", choices=("clustered", "isotropic"), default="clustered")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(args.threads)

    import numpy as np
    import pyarrow as pa

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from laion_hf.search.index import KnnIndex, build_index
    from laion_hf.testing.vectors import random_vectors, write_embedding_folder

    clusters = args.rows // 200 if args.kind == "clustered" else 0  # 200 rows a concept, as in tests/search
    vectors = random_vectors(args.rows + args.queries, args.dim, clusters=clusters, spread=1.2, seed=0)
    queries, vectors = vectors[args.rows :], vectors[: args.rows]
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        keys = pa.table({"key": pa.array(np.arange(args.rows).astype(str))})
        write_embedding_folder(Path(tmp) / "emb", vectors, keys, rows_per_shard=100_000)
        del vectors

        started = time.perf_counter()
        info = build_index(Path(tmp) / "emb", Path(tmp) / "index", model="laion-hf-tiny", threads=args.threads)
        ours_build = time.perf_counter() - started

        started = time.perf_counter()
        matrix = np.concatenate([np.load(p).astype(np.float32) for p in sorted((Path(tmp) / "emb" / "img_emb").glob("*.npy"))])
        exact_build = time.perf_counter() - started

        index = KnnIndex(Path(tmp) / "index")
        ours_times, exact_times, found, truth = [], [], [], []
        for _ in range(args.runs):
            ours_run = exact_run = 0.0
            found, truth = [], []
            for query in queries:
                started = time.perf_counter()
                _, ids = index.search("image", query[None], 10)
                ours_run += time.perf_counter() - started
                started = time.perf_counter()
                scores = matrix @ query
                top = np.argpartition(-scores, 10)[:10]
                exact_run += time.perf_counter() - started
                found.append(set(ids[0].tolist()))
                truth.append(set(top.tolist()))
            ours_times.append(ours_run / len(queries))
            exact_times.append(exact_run / len(queries))
        recall = np.mean([len(f & t) / 10 for f, t in zip(found, truth)])

    entry = info.indices["image"]

    def spread(values: list[float], scale: float = 1e3) -> str:
        ordered = sorted(values)
        return f"{ordered[0] * scale:.2f} / {ordered[len(ordered) // 2] * scale:.2f} / {ordered[-1] * scale:.2f}"

    per_million = 1e6 / args.rows
    print(f"{args.rows:,} x {args.dim} {args.kind} vectors, {args.threads} threads, {args.queries} queries x {args.runs} runs")
    print(f"factory {entry.factory}, search {entry.search_params or 'exact'}, index {entry.bytes / 1e6:.0f} MB")
    print(f"build: ours {ours_build:.1f} s ({ours_build * per_million:.1f} s per million), "
          f"exact (load float32 matrix) {exact_build:.1f} s")
    print(f"query ms min/median/max: ours {spread(ours_times)}, exact numpy {spread(exact_times)}; "
          f"median speed-up {sorted(exact_times)[len(exact_times) // 2] / sorted(ours_times)[len(ours_times) // 2]:.1f}x")
    print(f"recall@10 vs exact: held-out queries here {recall:.3f}, recorded by the build {entry.recall_at_10:.3f}")


if __name__ == "__main__":
    main()
