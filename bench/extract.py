"""Benchmark ``laion-hf extract`` against cc2dataset's WAT extraction, single process, same WAT files.

Three passes over the same generated WAT files (realistic Common Crawl layout,
written by :mod:`laion_hf.testing.wat`):

* ``bare``: fastwarc + orjson parse of every metadata record, nothing else: the
  floor any Python WAT extractor stands on;
* ``ours``: :func:`laion_hf.extract.extract_file` (rules, ftfy, in-file dedup,
  language ID, LAION hash, parquet write); ``ours-nolang`` the same without
  language ID (``--no-language``), the work cc2dataset's function does;
* ``cc2dataset``: ``cc2dataset.main.process_wat(path, "image")`` (PyPI 1.5.0),
  run in its own virtualenv under ``bench/out/cc2dataset-venv`` because it pins
  old dependencies (pyspark, simdjson); create it with
  ``python3.10 -m venv bench/out/cc2dataset-venv && bench/out/cc2dataset-venv/bin/pip install cc2dataset==1.5.0``.

Each pass runs in a fresh subprocess, after a warm-up on the first file, and
times only the extraction loop in CPU seconds of the process (``process_time``:
the machine is shared, and CPU time is what "per core" means). Prints pairs/s
per core and the speed ratios: median CPU time of one tool over the other on
the same input (so a ratio does not depend on which pairs each tool counts),
plus the min/max of the ratio over the interleaved run pairs.

    .venv/bin/python bench/extract.py [--files 2] [--pages 3000] [--runs 3] [--baseline DIR]

``--baseline DIR`` also times the extractor found in ``DIR`` (a copy of an
older ``laion_hf``, e.g. ``git archive REV laion_hf | tar -x -C DIR``) in the
same interleaved loop, so before/after ratios come from one noisy session.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
CC2DATASET_PYTHON = os.path.join(OUT, "cc2dataset-venv", "bin", "python")

WORDS = {
    "en": "red house garden beautiful summer dress woman man dog cat car table wooden modern kitchen view city night".split(),
    "de": "rotes haus garten schönes sommerkleid frau mann hund katze auto tisch holz moderne küche blick stadt nacht".split(),
    "fr": "maison rouge jardin belle robe été femme homme chien chat voiture table bois cuisine moderne vue ville nuit".split(),
    "es": "casa roja jardín hermoso vestido verano mujer hombre perro gato coche mesa madera cocina moderna vista ciudad".split(),
    "ru": "красный дом сад красивое летнее платье женщина мужчина собака кошка машина стол деревянный кухня вид город".split(),
}


LAION_PAIRS = "/work/shared/data/laion_pairs_10000.parquet"


def caption_pool() -> list[str]:
    """Real LAION captions when the shared sample is here (94 % ASCII, as crawled alt text is), else word salad."""
    if os.path.exists(LAION_PAIRS):
        import pyarrow.parquet as pq

        return [t for t in pq.read_table(LAION_PAIRS, columns=["TEXT"])["TEXT"].to_pylist() if t]
    rng = random.Random(0)
    return [" ".join(rng.choices(words, k=rng.randrange(1, 12))) for words in WORDS.values() for _ in range(2000)]


def synthetic_pages(seed: int, pages: int, captions: list[str]):
    """Pages shaped like Common Crawl's: many anchors, some images, site-wide logos, relative and bad URLs."""
    from laion_hf.testing.wat import Image, Page

    rng = random.Random(seed)
    for index in range(pages):
        host = f"site{rng.randrange(pages // 10 + 1)}.example.com"
        language = rng.choice(list(WORDS))
        images = [Image(f"https://{host}/static/logo.png", f"{host} logo")]  # repeated on every page of a host
        for j in range(rng.randrange(0, 25)):
            words = rng.choice(captions)
            src = rng.choice(
                [
                    f"/images/{index}-{j}.jpg",
                    f"https://cdn.{host}/p/{index}/{j}.jpg?w=800",
                    f"//img.{host}/{index}_{j}.webp",
                    f"thumbs/{index}-{j}.png",
                    f"/icons/{j}.svg",
                    f"/ads/{j}.gif",
                    "data:image/png;base64,iVBORw0KGgo=",
                ]
            )
            images.append(Image(src, rng.choice([words, words, words, "", None, " x "])))
        links = [("A@/href", f"https://{host}/article/{index}/{k}", " ".join(rng.choices(WORDS[language], k=4))) for k in range(rng.randrange(20, 120))]
        if rng.random() < 0.05:
            links.append(("A@/href", "https://creativecommons.org/licenses/by/4.0/", "CC BY 4.0"))
        yield Page(url=f"https://{host}/article/{index}.html", images=images, links=links, title=f"Article {index}", base=None if rng.random() < 0.9 else f"https://{host}/")


def generate(files: int, pages: int) -> list[str]:
    from laion_hf.testing.wat import write_wat

    folder = os.path.join(OUT, "wat", f"{files}x{pages}")
    os.makedirs(folder, exist_ok=True)
    paths, captions = [], caption_pool()
    for index in range(files):
        path = os.path.join(folder, f"CC-MAIN-20230601000000-20230601030000-{index:05d}.warc.wat.gz")
        if not os.path.exists(path):
            write_wat(path + ".part", synthetic_pages(index, pages, captions), warc_filename=os.path.basename(path).replace(".wat", ""))
            os.replace(path + ".part", path)
        paths.append(path)
    return paths


BARE = """
import json, sys, time, orjson
from fastwarc.warc import ArchiveIterator, WarcRecordType
paths = json.loads(sys.argv[1]); records = 0
for record in ArchiveIterator(open(paths[0], "rb"), record_types=WarcRecordType.metadata, parse_http=False):
    orjson.loads(record.reader.read())
start = time.process_time()
for path in paths:
    with open(path, "rb") as stream:
        for record in ArchiveIterator(stream, record_types=WarcRecordType.metadata, parse_http=False):
            orjson.loads(record.reader.read()); records += 1
print(json.dumps({"seconds": time.process_time() - start, "records": records, "pairs": None}))
"""

OURS = """
import json, sys, tempfile, time
from laion_hf.extract.extract import WatInput, extract_file
from laion_hf.extract.language import LanguageDetector
paths = json.loads(sys.argv[1]); detector = LanguageDetector() if sys.argv[2] == "language" else None
pairs = records = 0; dropped = {}
with tempfile.TemporaryDirectory() as out:
    extract_file(WatInput("warm-up", paths[0]), out, detector)  # one-time imports and model load
    start = time.process_time()
    for i, path in enumerate(paths):
        stats = extract_file(WatInput(f"f{i}", path), out, detector)
        pairs += stats["kept"]; records += stats["records"]
        for reason, count in stats["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + count
    seconds = time.process_time() - start
print(json.dumps({"seconds": seconds, "records": records, "pairs": pairs, "dropped": dropped}))
"""

CC2DATASET = """
import json, sys, time, logging
from loguru import logger; logger.remove()
from cc2dataset.main import process_wat
paths = json.loads(sys.argv[1]); pairs = 0
for _ in process_wat(paths[0], "image"):
    pass  # the same warm-up as ours
start = time.process_time()
for path in paths:
    for _ in process_wat(path, "image"):
        pairs += 1
print(json.dumps({"seconds": time.process_time() - start, "records": None, "pairs": pairs}))
"""


def run(python: str, code: str, paths: list[str], *extra: str, pythonpath: str | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run(
        [python, "-c", textwrap.dedent(code), json.dumps(paths), *extra],
        check=True, capture_output=True, text=True, env=env, cwd=pythonpath,  # "-c" puts the cwd first on sys.path
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--pages", type=int, default=3000, help="pages per WAT file")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", help="directory holding an older laion_hf to time side by side")
    args = parser.parse_args()

    paths = generate(args.files, args.pages)
    size = sum(os.path.getsize(p) for p in paths) / 1e6
    print(f"{len(paths)} WAT files, {args.pages} pages each, {size:.1f} MB gzipped; {args.runs} runs, 1 process each")
    tools = {
        "bare": (sys.executable, BARE, (), None),
        "ours": (sys.executable, OURS, ("language",), None),
        "ours-nolang": (sys.executable, OURS, ("none",), None),
    }
    if args.baseline:
        tools["base"] = (sys.executable, OURS, ("language",), os.path.abspath(args.baseline))
        tools["base-nolang"] = (sys.executable, OURS, ("none",), os.path.abspath(args.baseline))
    if os.path.exists(CC2DATASET_PYTHON):
        tools["cc2dataset"] = (CC2DATASET_PYTHON, CC2DATASET, (), None)
    else:
        print(f"cc2dataset skipped: {CC2DATASET_PYTHON} missing (see the module docstring)")
    seconds: dict[str, list[float]] = {name: [] for name in tools}
    results: dict[str, dict] = {}
    for _ in range(args.runs):  # interleaved, so noise from other jobs hits every tool alike
        for name, (python, code, extra, pythonpath) in tools.items():
            results[name] = run(python, code, paths, *extra, pythonpath=pythonpath)
            seconds[name].append(results[name]["seconds"])

    ours_pairs = results["ours"]["pairs"]
    print(f"{'tool':<11} {'pairs':>9} {'cpu s min':>9} {'median':>7} {'max':>7} {'pairs/s/core (median)':>22}")
    for name, times in seconds.items():
        pairs = results[name]["pairs"] if results[name]["pairs"] is not None else ours_pairs
        note = "  (our pair count: the limit for ours)" if name == "bare" else ""
        print(f"{name:<11} {pairs:>9,} {min(times):>9.2f} {statistics.median(times):>7.2f} {max(times):>7.2f} "
              f"{pairs / statistics.median(times):>22,.0f}{note}")
    median = {name: statistics.median(times) for name, times in seconds.items()}
    print(f"our IMG@/src links dropped by reason: {results['ours']['dropped']}")
    if "cc2dataset" in results:
        extra = results["cc2dataset"]["pairs"] - ours_pairs
        print(f"cc2dataset emits {extra:,} more pairs: it applies no svg/gif/short-caption/hostname rule and "
              "dedups later in Spark, not per file (its no-alt and non-http drops match ours)")
    def ratio(a: str, b: str) -> str:
        paired = [x / y for x, y in zip(seconds[a], seconds[b])]
        return f"{median[a] / median[b]:.2f}x (run pairs {min(paired):.2f}-{max(paired):.2f})"

    for ours in ("ours", "ours-nolang", "base", "base-nolang"):
        if ours not in median:
            continue
        if "cc2dataset" in median:
            print(f"{ours} speed-up over cc2dataset: {ratio('cc2dataset', ours)}; goal >= 2x")
        print(f"{ours} time over the bare fastwarc+orjson parse: {ratio(ours, 'bare')}; goal <= 2x")
    if "base" in median:
        for ours in ("ours", "ours-nolang"):
            print(f"{ours} speed-up over the baseline: {ratio('base' + ours[4:], ours)}")


if __name__ == "__main__":
    main()
