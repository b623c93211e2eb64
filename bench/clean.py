"""Benchmark ``laion-hf clean`` against a DuckDB anti-join and against plain pyarrow read+write.

Builds synthetic LAION-5B "-joined" metadata (URL, TEXT, WIDTH, HEIGHT,
similarity, hash, punsafe, pwatermark; snappy parquet shards; captions of five
words from a 33-word English vocabulary, all ASCII; ASCII URLs of 63 / 84 / 175
bytes at the 5th / 50th / 95th percentile, mean 97, like the 10,000 real LAION
URLs in shared/data: 53 / 90 / 166, mean 98, 0.02 % non-ASCII) plus a laion-hash
list and a url-sha256 list (0.1 % of rows each, as many entries again not in the
data), then times each contender as a fresh process on this interpreter, in rounds
(A B C ... A B C ...) so that machine noise hits them alike:

* ``ours CLI``: ``laion-hf clean IN OUT --remove ... --variant research`` (the whole
  command as a user runs it, default ``--workers``);
* ``ours lib wN``: :func:`laion_hf.clean.clean_copy` with N = 1 and 2 workers from
  ``python -c``: the same work without the CLI's start-up;
* ``duckdb``: the same rules in SQL, per shard: ``ANTI JOIN`` on ``hash`` (and on
  ``sha256(URL)``), ``punsafe IS NULL OR punsafe <= 0.95``, ``COPY ... TO`` snappy
  parquet, ``threads`` = the machine's cores;
* ``pyarrow``: every shard read with ``iter_batches`` and written back with a
  ``ParquetWriter`` (snappy, default options), one process per core, no filtering.

Per run: wall seconds, CPU seconds (``wait4``: the process and its reaped
children, so pool workers count) and peak memory (the sum of PSS over the
process tree, sampled every 50 ms, so shared pages count once). Speeds
(the other's time / ours) are taken run by run within a round. The load
average is printed with each table: the machine is shared. Then our peak
memory on 4x the input (the same shards linked four times), and the tar path:
rewriting img2dataset tars without removed keys (:func:`laion_hf.io.tar.rewrite_tar`)
vs copying them.

``--digests`` times only the URL digest of a url-md5/url-sha256 list, side by
side in rounds, on 1M real LAION URLs (the shared 10,000, 100 times) in 65,536-row
batches: ours (:func:`laion_hf.stages.removal.url_digests`, DataFusion's kernel),
``hashlib`` per row (the reference, and the stage's former code) and DuckDB's
``unhex(md5|sha256(URL))``, each checked equal to hashlib.

    .venv/bin/python bench/clean.py [--rows 2000000] [--shard-rows 500000] [--runs 3]
    .venv/bin/python bench/clean.py --rows 10000000 --shard-rows 1000000 --runs 4 [--lists hash]   # the recorded figures
    .venv/bin/python bench/clean.py --digests [--runs 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
VARIANT, THRESHOLD = "research", 0.95
CORES = os.cpu_count() or 1


WORDS = np.array(
    "red house garden beautiful summer dress woman man dog cat car table wooden modern kitchen view city night "
    "vintage poster print photo stock image illustration vector background white black blue green".split()
)


# --- data ----------------------------------------------------------------------------------------

def make_shard(start: int, rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    index = pa.array(np.arange(start, start + rows))
    host = pc.cast(pa.array(np.arange(start, start + rows) % 997), pa.string())
    photo = pc.utf8_lpad(pc.cast(pa.array((np.arange(start, start + rows) * 2654435761) % 10**9), pa.string()), 9, "0")
    # A slug of k words (k geometric, mean 5.25) gives URL lengths like real LAION ones (module docstring).
    slug_word = pc.binary_join_element_wise(pa.array(WORDS[rng.integers(0, len(WORDS), rows)]), "-", "")
    slug = pc.binary_repeat(slug_word, pa.array(rng.geometric(0.16, rows) - 1))
    urls = pc.binary_join_element_wise(
        "https://img", host, ".cdn.example.com/photos/", photo, "/", slug, "image_", pc.cast(index, pa.string()), ".jpg", ""
    )
    words = [pa.array(WORDS[rng.integers(0, len(WORDS), rows)]) for _ in range(5)]
    captions = pc.binary_join_element_wise(*words, " ")
    punsafe = rng.random(rows, dtype=np.float32) ** 4
    punsafe_mask = rng.random(rows) < 0.01  # a few rows without a score
    return pa.table(
        {
            "URL": urls,
            "TEXT": captions,
            "WIDTH": pa.array(rng.integers(64, 2048, rows, dtype=np.int32)),
            "HEIGHT": pa.array(rng.integers(64, 2048, rows, dtype=np.int32)),
            "similarity": pa.array(rng.uniform(0.28, 0.45, rows)),
            "hash": pa.array(rng.integers(-(2**63), 2**63 - 1, rows, dtype=np.int64)),
            "punsafe": pa.array(punsafe, mask=punsafe_mask),
            "pwatermark": pa.array(rng.random(rows, dtype=np.float32)),
        }
    )


def build_input(directory: Path, rows: int, shard_rows: int) -> tuple[Path, Path]:
    """Write the metadata shards and the two removal lists; returns (url list, hash list)."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(1)
    listed_hashes, listed_urls = [], []
    for number, start in enumerate(range(0, rows, shard_rows)):
        table = make_shard(start, min(shard_rows, rows - start), seed=number)
        pq.write_table(table, directory / f"part-{number:05d}-bench-c000.snappy.parquet", compression="snappy")
        pick = rng.choice(table.num_rows, max(1, table.num_rows // 1000), replace=False)
        listed_hashes.extend(table["hash"].take(pa.array(pick)).to_pylist())
        pick = rng.choice(table.num_rows, max(1, table.num_rows // 1000), replace=False)
        listed_urls.extend(table["URL"].take(pa.array(pick)).to_pylist())
    url_list = directory.parent / "url-sha256.txt"
    with open(url_list, "w") as f:
        for i, url in enumerate(listed_urls):
            f.write(hashlib.sha256(url.encode()).hexdigest() + "\n")
            f.write(hashlib.sha256(f"https://elsewhere.example.org/{i}.jpg".encode()).hexdigest() + "\n")
    hash_list = directory.parent / "laion-hash.txt"
    extra = rng.integers(-(2**63), 2**63 - 1, len(listed_hashes), dtype=np.int64).tolist()
    hash_list.write_text("".join(f"{h}\n" for h in listed_hashes + extra))
    return url_list, hash_list


# --- the contenders, each a fresh process --------------------------------------------------------

def ours_command(src: Path, out: Path, lists: dict[str, Path]) -> list[str]:
    removes = [arg for kind, path in lists.items() for arg in ("--remove", f"{kind}={path}")]
    return [PYTHON, "-c", "from laion_hf.cli import main; main()", "clean", str(src), str(out), *removes,
            "--variant", VARIANT]


LIBRARY_SCRIPT = textwrap.dedent(
    """
    import sys
    from laion_hf.clean import CleanOptions, clean_copy
    src, out, variant, workers, *specs = sys.argv[1:]
    remove = tuple(tuple(spec.split("=", 1)) for spec in specs)
    if __name__ == "__main__":  # spawned pool workers import this module too
        clean_copy(src, out, CleanOptions(remove=remove, variant=variant), workers=int(workers), show_progress=False)
    """
)


def library_command(src: Path, out: Path, lists: dict[str, Path], workers: int) -> list[str]:
    specs = [f"{kind}={path}" for kind, path in lists.items()]
    return [PYTHON, "-c", LIBRARY_SCRIPT, str(src), str(out), VARIANT, str(workers), *specs]


def duckdb_command(src: Path, out: Path, lists: dict[str, Path]) -> list[str]:
    url_list = lists.get("url-sha256", "")
    return [PYTHON, "-c", DUCKDB_SCRIPT, str(src), str(out), str(lists["laion-hash"]), str(THRESHOLD), str(url_list),
            str(CORES)]


DUCKDB_SCRIPT = textwrap.dedent(
    """
    import sys, glob, os, duckdb
    src, out, hash_list, threshold, url_list, threads = sys.argv[1:7]
    os.makedirs(out, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    url_join = ""
    if url_list:
        con.execute(f"CREATE TABLE urls AS SELECT lower(trim(column0)) AS v FROM read_csv('{url_list}', header=false, columns={{'column0': 'VARCHAR'}})")
        url_join = "ANTI JOIN urls ON sha256(m.URL) = urls.v"
    con.execute(f"CREATE TABLE hashes AS SELECT column0 AS h FROM read_csv('{hash_list}', header=false, columns={{'column0': 'BIGINT'}})")
    for path in sorted(glob.glob(os.path.join(src, '*.parquet'))):
        target = os.path.join(out, os.path.basename(path))
        con.execute(f'''
            COPY (
                SELECT m.* FROM read_parquet('{path}') AS m
                {url_join}
                ANTI JOIN hashes ON m.hash = hashes.h
                WHERE m.punsafe IS NULL OR m.punsafe <= {threshold}
            ) TO '{target}' (FORMAT parquet, COMPRESSION snappy)
        ''')
    """
)

PYARROW_SCRIPT = textwrap.dedent(
    """
    import sys, glob, os
    from concurrent.futures import ProcessPoolExecutor
    import pyarrow.parquet as pq

    def copy(path, out):
        parquet = pq.ParquetFile(path)
        with pq.ParquetWriter(os.path.join(out, os.path.basename(path)), parquet.schema_arrow, compression="snappy") as w:
            for batch in parquet.iter_batches(batch_size=65536):
                w.write_batch(batch)

    if __name__ == "__main__":
        src, out, processes = sys.argv[1:4]
        os.makedirs(out, exist_ok=True)
        paths = sorted(glob.glob(os.path.join(src, '*.parquet')))
        with ProcessPoolExecutor(int(processes)) as pool:
            list(pool.map(copy, paths, [out] * len(paths)))
    """
)


def _pss(pid: int) -> int:
    """Proportional set size: shared pages (a forked pool's copy-on-write memory) counted once overall."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))


def tree_rss(pid: int) -> int:
    """Memory of ``pid`` and all its descendants (sum of PSS)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            total += _pss(current)
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (OSError, StopIteration):
            continue
    return total


def timed(command: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the process and its reaped children, peak tree RSS bytes) of one run."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, cwd=ROOT)
        peak = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, tree_rss(process.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        stop.set()
        sampler.join()
        if process.returncode != 0:
            stderr.seek(0)
            raise SystemExit(f"{command[:4]} failed:\n{stderr.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, peak


def rows_in(directory: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in directory.glob("*.parquet"))


def summary(values: list[float]) -> str:
    return f"{min(values):8.2f} {statistics.median(values):8.2f} {max(values):8.2f}"


# --- tar path ---------------------------------------------------------------------------------------

def tar_bench(work: Path, tars: int, samples: int, runs: int) -> None:
    from laion_hf.io.tar import rewrite_tar, write_samples

    rng = np.random.default_rng(2)
    src = work / "tars"
    src.mkdir()
    for t in range(tars):
        write_samples(
            str(src / f"{t:05d}.tar"),
            (
                (f"{t:05d}{i:04d}", {"jpg": rng.bytes(int(rng.integers(4000, 16000))), "txt": b"a caption", "json": b"{}"})
                for i in range(samples)
            ),
        )
    size = sum(p.stat().st_size for p in src.iterdir())
    removed = {f"{t:05d}{i:04d}" for t in range(tars) for i in range(0, samples, 100)}  # 1 % removed
    ours, copy = [], []
    for run in range(runs):
        out = work / f"tars-out-{run}"
        out.mkdir()
        started = time.perf_counter()
        for path in sorted(src.iterdir()):
            rewrite_tar(str(path), str(out / path.name), lambda key: key not in removed)
        ours.append(time.perf_counter() - started)
        shutil.rmtree(out)
        out.mkdir()
        started = time.perf_counter()
        for path in sorted(src.iterdir()):
            shutil.copyfile(path, out / path.name)
        copy.append(time.perf_counter() - started)
        shutil.rmtree(out)
    print(f"\ntar path: {tars} tars x {samples} samples, {size / 2**20:.0f} MiB, 1 % of samples removed, {runs} runs")
    print(f"{'':24}{'min':>8} {'median':>8} {'max':>8}  (seconds)")
    print(f"{'rewrite_tar (ours)':24}{summary(ours)}   {size / 2**20 / statistics.median(ours):7.0f} MiB/s")
    print(f"{'plain copy':24}{summary(copy)}   {size / 2**20 / statistics.median(copy):7.0f} MiB/s")
    ratios = [a / b for a, b in zip(ours, copy)]
    print(f"rewrite / copy time ratio, per run: min {min(ratios):.2f} median {statistics.median(ratios):.2f} max {max(ratios):.2f}")


# --- URL digests alone ---------------------------------------------------------------------------

SHARED_URLS = Path(os.environ.get("LAION_HF_SHARED", ROOT.parent / "shared")) / "data" / "laion_pairs_10000.parquet"


def digest_bench(runs: int) -> None:
    import resource

    import duckdb

    from laion_hf.stages.removal import url_digests

    if not SHARED_URLS.exists():
        raise SystemExit(f"{SHARED_URLS} is absent (set LAION_HF_SHARED)")
    real = pq.read_table(SHARED_URLS)["URL"].combine_chunks()
    urls = pa.chunked_array([real] * 100).combine_chunks()
    batches = [urls.slice(start, 65536) for start in range(0, len(urls), 65536)]
    duck = duckdb.connect()
    duck.execute("SET threads = 1")

    def per_row(batch: pa.Array, algorithm: str) -> pa.Array:
        digest = getattr(hashlib, algorithm)
        raw = pc.cast(batch, pa.binary()).to_pylist()
        return pa.array([None if u is None else digest(u).digest() for u in raw], pa.binary(len(digest().digest())))

    def in_duckdb(batch: pa.Array, algorithm: str) -> pa.ChunkedArray:
        urls_table = pa.table({"URL": batch})  # noqa: F841 (DuckDB reads the local by name)
        digests = duck.sql(f"SELECT unhex({algorithm}(URL)) AS d FROM urls_table").to_arrow_table()["d"]
        return pc.cast(digests, pa.binary(16 if algorithm == "md5" else 32))

    contenders = {"ours (DataFusion)": url_digests, "hashlib per row": per_row, "duckdb": in_duckdb}
    lengths = pc.binary_length(pc.cast(urls, pa.binary())).to_numpy()
    print(f"URL digests: {len(urls):,} real LAION URLs ({len(pc.unique(real)):,} distinct, bytes p5 / p50 / p95 "
          f"{np.percentile(lengths, 5):.0f} / {np.percentile(lengths, 50):.0f} / {np.percentile(lengths, 95):.0f}), "
          f"{len(batches)} batches, {runs} rounds; {load_average()} before")
    for algorithm in ("md5", "sha256"):
        reference = pa.chunked_array([per_row(b, algorithm) for b in batches])
        wall: dict[str, list[float]] = {name: [] for name in contenders}
        cpu: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(runs):
            for name, digest in contenders.items():
                started, used = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
                digests = [digest(b, algorithm) for b in batches]
                after = resource.getrusage(resource.RUSAGE_SELF)
                wall[name].append(time.perf_counter() - started)
                cpu[name].append(after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime)
                chunks = [c for d in digests for c in (d.chunks if isinstance(d, pa.ChunkedArray) else [d])]
                if not pa.chunked_array(chunks, reference.type).equals(reference):
                    raise SystemExit(f"{name} {algorithm}: digests differ from hashlib")
        print(f"{algorithm}: {'wall s: min':>30} {'median':>8} {'max':>8}   {'CPU s: min':>11} {'median':>8} {'max':>8}"
              "   CPU vs ours, per round")
        for name in contenders:
            ratios = [theirs / ours for ours, theirs in zip(cpu["ours (DataFusion)"], cpu[name])]
            print(f"  {name:20}{summary(wall[name]):>30}   {summary(cpu[name]):>29}"
                  f"   {statistics.median(ratios):.2f}x ({min(ratios):.2f} - {max(ratios):.2f})")
    print(load_average() + " after")


def duckdb_version() -> str:
    import duckdb

    return duckdb.__version__


def load_average() -> str:
    return "load average " + " / ".join(f"{value:.1f}" for value in os.getloadavg())


def compare(title: str, src: Path, lists: dict[str, Path], rows: int, runs: int, work: Path) -> None:
    """Every contender on the same input and rules, one run each per round, ``runs`` rounds."""
    contenders = {
        "ours CLI": lambda out: ours_command(src, out, lists),
        "ours lib w1": lambda out: library_command(src, out, lists, 1),
        "ours lib w2": lambda out: library_command(src, out, lists, 2),
        "duckdb": lambda out: duckdb_command(src, out, lists),
        "pyarrow": lambda out: [PYTHON, "-c", PYARROW_SCRIPT, str(src), str(out), str(CORES)],
    }
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    rss: dict[str, list[int]] = {name: [] for name in contenders}
    kept = {}
    load_before = load_average()
    for _ in range(runs):
        for name, command in contenders.items():
            out = work / f"out-{name.replace(' ', '-')}"
            wall, used, peak = timed(command(out))
            seconds[name].append(wall)
            cpu[name].append(used)
            rss[name].append(peak)
            kept[name] = rows_in(out)
            shutil.rmtree(out)
    ours = [name for name in contenders if name.startswith("ours")]
    for name in ours:
        if kept[name] != kept["duckdb"]:
            raise SystemExit(f"{name} kept {kept[name]:,} rows, duckdb {kept['duckdb']:,}: the rules differ")

    print(f"\n{title}, variant {VARIANT}: {runs} rounds, kept {kept['duckdb']:,} of {rows:,} rows; "
          f"{load_before} before, {load_average()} after")
    print(f"{'':14}{'wall s: min':>12} {'median':>8} {'max':>8}   {'CPU s: min':>11} {'median':>8} {'max':>8}"
          f"   peak memory (median)")
    for name in contenders:
        print(f"{name:14}{summary(seconds[name]):>30}   {summary(cpu[name]):>29}"
              f"   {statistics.median(rss[name]) / 2**20:8,.0f} MiB")
    pairs = [(other, label, figures) for other in ("duckdb", "pyarrow") for label, figures in (("wall", seconds), ("CPU", cpu))]
    print("speed = their time / ours, per round: median (min - max)")
    print(f"{'':14}" + "".join(f"{f'vs {other} {label}':>22}" for other, label, _ in pairs))
    for name in ours:
        cells = []
        for other, _, figures in pairs:
            speeds = [theirs / mine for mine, theirs in zip(figures[name], figures[other])]
            cells.append(f"{statistics.median(speeds):.2f}x ({min(speeds):.2f} - {max(speeds):.2f})")
        print(f"{name:14}" + "".join(f"{cell:>22}" for cell in cells))


# --- main -------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--shard-rows", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tars", type=int, default=4)
    parser.add_argument("--tar-samples", type=int, default=2000)
    parser.add_argument("--lists", choices=("hash", "url", "both"), default="both",
                        help="the laion-hash scenario, the url-sha256 + laion-hash one, or both")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--digests", action="store_true", help="time only the URL digests on 1M real LAION URLs")
    args = parser.parse_args()
    if args.digests:
        digest_bench(args.runs)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-clean-", dir=args.work))
    try:
        started = time.perf_counter()
        src = work / "metadata"
        url_list, hash_list = build_input(src, args.rows, args.shard_rows)
        size = sum(p.stat().st_size for p in src.iterdir())
        print(f"input: {args.rows:,} rows in {len(list(src.iterdir()))} shards, {size / 2**20:.0f} MiB "
              f"(built in {time.perf_counter() - started:.0f} s); {CORES} cores, Python {sys.version.split()[0]}, "
              f"pyarrow {pa.__version__}, duckdb {duckdb_version()}")

        scenarios = {
            "laion-hash list + punsafe": {"laion-hash": hash_list},
            "url-sha256 list + laion-hash list + punsafe": {"url-sha256": url_list, "laion-hash": hash_list},
        }
        chosen = {"hash": list(scenarios)[:1], "url": list(scenarios)[1:], "both": list(scenarios)}[args.lists]
        for title in chosen:
            compare(title, src, scenarios[title], args.rows, args.runs, work)

        # Memory at 4x the input: the same shards, linked four times under distinct names.
        quadruple = work / "metadata-4x"
        quadruple.mkdir()
        for copy in range(4):
            for path in src.iterdir():
                os.link(path, quadruple / path.name.replace("-bench-", f"-bench{copy}-"))
        lists = scenarios["laion-hash list + punsafe"]
        _, _, peak_1x = timed(ours_command(src, work / "out-1x", lists))
        shutil.rmtree(work / "out-1x")
        wall_4x, _, peak_4x = timed(ours_command(quadruple, work / "out-4x", lists))
        shutil.rmtree(work / "out-4x")
        print(f"\nours peak RSS: 1x input ({args.rows:,} rows) {peak_1x / 2**20:,.0f} MiB, "
              f"4x input ({4 * args.rows:,} rows) {peak_4x / 2**20:,.0f} MiB (4x took {wall_4x:.0f} s)")

        tar_bench(work, args.tars, args.tar_samples, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
