"""Benchmark ``laion-hf extract`` against cc2dataset's WAT extraction, per core, on the same WAT files.

Input: WAT files in Common Crawl's layout (written by :mod:`laion_hf.testing.wat`) whose alt texts
follow the text mix of the 10,000 real LAION captions in ``shared/data`` (share of non-ASCII
captions, scripts, HTML entities, mojibake, whitespace to normalise): every caption is a real
one, used once per file before any is reused (a reuse gets a number appended, so it stays a
distinct text, as real alt text is), plus a site-wide logo per host (the repeats a crawl holds),
empty, missing and 1-3 character alts, svg/gif/``data:`` links. Both mixes are printed.

Tools, each timed in a fresh subprocess after a warm-up on the first file:

* ``bare``: fastwarc + ``orjson.loads`` of every metadata record, nothing else;
* ``ours``: :func:`laion_hf.extract.extract` with ``workers=1`` (LAION's rules, ftfy, in-file
  and global dedup, language ID, LAION hash, parquet): everything the command does but its
  start-up; ``ours-nolang``: the same with ``detect_language=False``;
* ``cc2dataset``: ``cc2dataset.main.process_wat(path, "image")`` (PyPI 1.5.0), which does
  none of ftfy, language ID, the svg/gif/short-caption/hostname rules, dedup or writing. It
  pins old dependencies (pyspark, pysimdjson), so it runs from its own virtualenv, created
  from THIS interpreter (``sys._base_executable``, same CPython build) on first use in
  ``bench/out/cc2dataset-venv``; the bench refuses a venv on another Python version.

Runs are paired: every round runs each tool once, in an order that alternates between rounds
(A B A B, then B A B A), so load from other jobs on the shared machine hits every tool alike.
Each tool reports CPU seconds of its process (``process_time``: "per core") and wall seconds of
the timed part; the ratios are the medians of the per-round ratios (min-max shown). Load average
is printed before and after.

    .venv/bin/python bench/extract.py [--files 2] [--pages 3000] [--runs 5] [--baseline DIR] [--command]

``--baseline DIR`` also times the extractor found in ``DIR`` (an older ``laion_hf``:
``git archive REV laion_hf | tar -x -C DIR``) in the same rounds. ``--command`` adds whole
processes: ``laion-hf extract FILES OUT`` against a ``python -c`` looping ``process_wat``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # this checkout's laion_hf, also for the generator
OUT = os.path.join(HERE, "out")
CC2DATASET_VENV = os.path.join(OUT, "cc2dataset-venv")
CC2DATASET_PYTHON = os.path.join(CC2DATASET_VENV, "bin", "python")
LAION_PAIRS = os.environ.get("LAION_PAIRS", os.path.join(ROOT, "..", "shared", "data", "laion_pairs_10000.parquet"))
GENERATOR_VERSION = 3  # part of the WAT folder name: files from another generator are never reused

ANCHOR_WORDS = ["home", "about", "contact", "news", "blog", "shop", "cart", "login", "category", "page", "next", "previous",
                "more", "read", "article"]


# ---------------------------------------------------------------- text mix


def _script(char: str) -> str:
    try:
        name = unicodedata.name(char)
    except ValueError:
        return "OTHER"
    first = name.split()[0]
    return "CJK" if first in ("CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA") else first


def text_mix(texts: list[str]) -> dict[str, object]:
    """Shares of texts (in %) that are non-ASCII, hold an HTML entity or mojibake, that ftfy or
    whitespace normalisation changes, that repeat an earlier text; non-Latin scripts by share."""
    import ftfy
    from ftfy.badness import is_bad
    from ftfy.chardata import HTML_ENTITY_RE

    n = len(texts) or 1
    scripts: collections.Counter[str] = collections.Counter()
    for text in texts:
        if not text.isascii():
            scripts.update({_script(c) for c in text if not c.isascii() and c.isalpha()})

    def share(count: int) -> float:
        return round(100 * count / n, 2)

    return {
        "texts": len(texts),
        "non_ascii": share(sum(not t.isascii() for t in texts)),
        "html_entity": share(sum(HTML_ENTITY_RE.search(t) is not None for t in texts)),
        "mojibake": share(sum(is_bad(t) for t in texts)),
        "ftfy_changes": share(sum(ftfy.fix_text(t) != t for t in texts)),
        "whitespace_changes": share(sum(" ".join(t.split()) != t for t in texts)),
        "repeats": share(len(texts) - len(set(texts))),
        "mean_chars": round(sum(map(len, texts)) / n, 1),
        "scripts": {name: share(count) for name, count in scripts.most_common(8)},
    }


def real_captions() -> list[str]:
    import pyarrow.parquet as pq

    if not os.path.exists(LAION_PAIRS):
        sys.exit(f"{LAION_PAIRS} missing: the generator draws its alt texts from the real LAION captions")
    return [t for t in pq.read_table(LAION_PAIRS, columns=["TEXT"])["TEXT"].to_pylist() if t]


def wat_alts(path: str) -> list[str]:
    """The non-empty alt texts of every ``IMG@/src`` link in a WAT file (what the rules see)."""
    import orjson
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    alts = []
    with open(path, "rb") as stream:
        for record in ArchiveIterator(stream, record_types=WarcRecordType.metadata, parse_http=False):
            envelope = orjson.loads(record.reader.read())["Envelope"]
            html = envelope["Payload-Metadata"].get("HTTP-Response-Metadata", {}).get("HTML-Metadata", {})
            alts += [link["alt"] for link in html.get("Links", ()) if link["path"] == "IMG@/src" and link.get("alt")]
    return alts


# ---------------------------------------------------------------- input


class CaptionDeck:
    """Real captions dealt without replacement; after a full pass the deck is reshuffled. Every pass
    but the first file's first appends its own number to each caption, so no alt text repeats
    by accident, within a file or across files."""

    def __init__(self, captions: list[str], rng: random.Random, file_index: int):
        self.captions, self.rng, self.order = captions, rng, []
        self.passes, self.first_pass = 0, file_index * 1000

    def deal(self) -> str:
        if not self.order:
            self.order = list(range(len(self.captions)))
            self.rng.shuffle(self.order)
            self.passes += 1
        caption = self.captions[self.order.pop()]
        number = self.first_pass + self.passes
        return caption if number == 1 else f"{caption} {number}"


def synthetic_pages(seed: int, pages: int, captions: list[str]):
    """Pages shaped like Common Crawl's: many anchors, some images, site-wide logos, relative and bad URLs."""
    from laion_hf.testing.wat import Image, Page

    rng = random.Random(seed)
    deck = CaptionDeck(captions, rng, seed)
    logos = {}
    for index in range(pages):
        host = f"site{rng.randrange(pages // 10 + 1)}.example.com"
        logo = logos.setdefault(host, captions[rng.randrange(len(captions))])
        images = [Image(f"https://{host}/static/logo.png", logo)]  # the same (url, alt) on every page of a host
        for j in range(rng.randrange(0, 25)):
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
            alt = rng.choice(["caption", "caption", "caption", "", None, "short"])
            images.append(Image(src, deck.deal() if alt == "caption" else " x " if alt == "short" else alt))
        links = [
            ("A@/href", f"https://{host}/article/{index}/{k}", " ".join(rng.choices(ANCHOR_WORDS, k=3)))
            for k in range(rng.randrange(20, 120))
        ]
        if rng.random() < 0.05:
            links.append(("A@/href", "https://creativecommons.org/licenses/by/4.0/", "CC BY 4.0"))
        base = None if rng.random() < 0.9 else f"https://{host}/"
        yield Page(url=f"https://{host}/article/{index}.html", images=images, links=links, title=f"Article {index}", base=base)


def generate(files: int, pages: int, captions: list[str]) -> list[str]:
    from laion_hf.testing.wat import write_wat

    folder = os.path.join(OUT, "wat", f"v{GENERATOR_VERSION}-{files}x{pages}")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for index in range(files):
        path = os.path.join(folder, f"CC-MAIN-20230601000000-20230601030000-{index:05d}.warc.wat.gz")
        if not os.path.exists(path):
            warc = os.path.basename(path).replace(".wat", "")
            write_wat(path + ".part", synthetic_pages(index, pages, captions), warc_filename=warc)
            os.replace(path + ".part", path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- tools

BARE = """
import json, sys, time, orjson
from fastwarc.warc import ArchiveIterator, WarcRecordType
paths = json.loads(sys.argv[1]); records = 0
def parse(path):
    with open(path, "rb") as stream:
        for record in ArchiveIterator(stream, record_types=WarcRecordType.metadata, parse_http=False):
            orjson.loads(record.reader.read()); yield 1
sum(parse(paths[0]))
cpu, wall = time.process_time(), time.perf_counter()
records = sum(sum(parse(path)) for path in paths)
print(json.dumps({"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall, "pairs": None}))
"""

OURS = """
import json, sys, tempfile, time
try:
    from laion_hf.steps.extract import extract  # the run, since the step registry (issue 13)
except ImportError:
    from laion_hf.extract import extract  # a --baseline copy from before it
paths = json.loads(sys.argv[1]); language = sys.argv[2] == "language"
with tempfile.TemporaryDirectory() as out:
    extract(paths[:1], out + "/warm-up", detect_language=language, show_progress=False)  # imports, model load
    cpu, wall = time.process_time(), time.perf_counter()
    report = extract(paths, out + "/run", detect_language=language, show_progress=False)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
print(json.dumps({"cpu": cpu, "wall": wall, "pairs": report.total.kept, "dropped": dict(report.total.dropped)}))
"""

CC2DATASET = """
import json, sys, time
from loguru import logger; logger.remove()
from cc2dataset.main import process_wat
paths = json.loads(sys.argv[1]); pairs = 0
for _ in process_wat(paths[0], "image"):
    pass  # the same warm-up as ours
cpu, wall = time.process_time(), time.perf_counter()
for path in paths:
    for _ in process_wat(path, "image"):
        pairs += 1
print(json.dumps({"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall, "pairs": pairs}))
"""

CC2DATASET_COMMAND = """
import json, sys
from loguru import logger; logger.remove()
from cc2dataset.main import process_wat
print(json.dumps({"pairs": sum(1 for path in sys.argv[1:] for _ in process_wat(path, "image"))}))
"""


def ensure_cc2dataset() -> bool:
    """cc2dataset 1.5.0 in its own venv on this interpreter's CPython; False (with the reason) if not to be had."""
    if not os.path.exists(CC2DATASET_PYTHON):
        print(f"creating {CC2DATASET_VENV} with {sys._base_executable} and installing cc2dataset==1.5.0 ...")
        subprocess.run([sys._base_executable, "-m", "venv", CC2DATASET_VENV], check=True)
        done = subprocess.run([CC2DATASET_PYTHON, "-m", "pip", "install", "-q", "cc2dataset==1.5.0"], check=False)
        if done.returncode:
            print("cc2dataset skipped: its install failed")
            return False
    theirs = subprocess.run([CC2DATASET_PYTHON, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, check=True)
    if theirs.stdout.strip() != sys.version.strip():
        sys.exit(f"{CC2DATASET_VENV} runs Python {theirs.stdout.strip()}, this bench {sys.version}: remove it to rebuild")
    return True


def run(python: str, code: str, paths: list[str], *extra: str, pythonpath: str = ROOT) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    done = subprocess.run(
        [python, "-c", textwrap.dedent(code), json.dumps(paths), *extra],
        check=True, capture_output=True, text=True, env=env, cwd=pythonpath,  # "-c" puts the cwd first on sys.path
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_command(argv: list[str], pythonpath: str = ROOT) -> dict:
    """A whole process: CPU (user + system of the child) and wall seconds, start-up included."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath})
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"cpu": cpu, "wall": wall, "pairs": None}


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--pages", type=int, default=3000, help="pages per WAT file")
    parser.add_argument("--runs", type=int, default=5, help="rounds; each runs every tool once")
    parser.add_argument("--baseline", help="directory holding an older laion_hf to time side by side")
    parser.add_argument("--command", action="store_true", help="also time whole processes (start-up included)")
    parser.add_argument("--tools", help="comma-separated subset of tools to run")
    args = parser.parse_args()

    captions = real_captions()
    paths = generate(args.files, args.pages, captions)
    size = sum(os.path.getsize(p) for p in paths) / 1e6
    print(f"{len(paths)} WAT files, {args.pages} pages each, {size:.1f} MB gzipped; {args.runs} rounds, 1 process per tool")
    print(f"Python {sys.version.split()[0]} ({sys.executable}); {os.cpu_count()} cores")
    print("text mix, % of texts (real = the 10,000 LAION captions; generated = IMG@/src alts of 5+ characters in the first file):")
    print(f"  real      {json.dumps(text_mix(captions))}")
    print(f"  generated {json.dumps(text_mix([a for a in wat_alts(paths[0]) if len(a.strip()) >= 5]))}")

    python = sys.executable
    tools = {
        "bare": (python, BARE, (), ROOT),
        "ours": (python, OURS, ("language",), ROOT),
        "ours-nolang": (python, OURS, ("none",), ROOT),
    }
    if args.baseline:
        baseline = os.path.abspath(args.baseline)
        tools["base"] = (python, OURS, ("language",), baseline)
        tools["base-nolang"] = (python, OURS, ("none",), baseline)
    wanted = set(args.tools.split(",")) if args.tools else None
    if (wanted is None or "cc2dataset" in wanted) and ensure_cc2dataset():
        tools["cc2dataset"] = (CC2DATASET_PYTHON, CC2DATASET, (), ROOT)
    commands = {}
    if args.command:
        laion_hf = os.path.join(os.path.dirname(python), "laion-hf")
        out = tempfile.mkdtemp(prefix="bench-extract-")
        commands["laion-hf extract"] = [laion_hf, "extract", *paths, os.path.join(out, "o")]
        if "cc2dataset" in tools:
            commands["cc2dataset script"] = [CC2DATASET_PYTHON, "-c", CC2DATASET_COMMAND, *paths]
    if wanted is not None:
        tools = {k: v for k, v in tools.items() if k in wanted}

    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    results: dict[str, list[dict]] = {name: [] for name in [*tools, *commands]}
    for round_index in range(args.runs):
        order = list(tools) if round_index % 2 == 0 else list(reversed(tools))
        for name in order:
            python_, code, extra, pythonpath = tools[name]
            results[name].append(run(python_, code, paths, *extra, pythonpath=pythonpath))
        for name in list(commands) if round_index % 2 == 0 else list(reversed(commands)):
            if name.startswith("laion-hf"):
                import shutil

                shutil.rmtree(commands[name][-1], ignore_errors=True)
            results[name].append(run_command(commands[name]))
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    ours_pairs = results["ours"][-1]["pairs"] if "ours" in results else None
    print(f"{'tool':<18} {'pairs':>8} {'CPU s min / median / max':>25} {'wall s min / median / max':>26} {'pairs/CPU s':>12}")
    for name, runs in results.items():
        pairs = runs[-1]["pairs"] if runs[-1]["pairs"] is not None or name in commands else ours_pairs
        cpu, wall = [r["cpu"] for r in runs], [r["wall"] for r in runs]
        rate = f"{pairs / statistics.median(cpu):>12,.0f}" if pairs else f"{'-':>12}"
        count = f"{pairs:,}" if pairs else "-"
        print(f"{name:<18} {count:>8} {spread(cpu):>25} {spread(wall):>26} {rate}")
    if "ours" in results:
        print(f"our IMG@/src links dropped by reason: {results['ours'][-1]['dropped']}")

    def ratio(slow: str, fast: str, key: str) -> str:
        paired = [a[key] / b[key] for a, b in zip(results[slow], results[fast])]
        return f"{statistics.median(paired):.2f}x ({min(paired):.2f}-{max(paired):.2f})"

    def compare(slow: str, fast: str, label: str) -> None:
        if slow in results and fast in results:
            print(f"{label}: CPU {ratio(slow, fast, 'cpu')}, wall {ratio(slow, fast, 'wall')}")

    for ours in ("ours", "ours-nolang", "base", "base-nolang"):
        compare("cc2dataset", ours, f"{ours} speed over cc2dataset (goal >= 2x)")
        compare(ours, "bare", f"{ours} time over the bare fastwarc+orjson parse")
    compare("base", "ours", "ours speed over the baseline")
    compare("base-nolang", "ours-nolang", "ours-nolang speed over the baseline")
    compare("cc2dataset script", "laion-hf extract", "whole command: laion-hf extract speed over a cc2dataset script")


if __name__ == "__main__":
    main()
