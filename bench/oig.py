"""Benchmark: OIG build throughput and memory (templating + PII + quality + dedup) on generated source rows.

    .venv/bin/python bench/oig.py [--rows 100000] [--runs 3] [--workers 1,2] [--stage-rows 100000]

With ``--dedup-rows N`` it instead times the dedup index alone (the part that
used to grow ~1.5 KB per kept row) on N synthetic signed rows (random MinHash
signatures, 3 % exact repeats, 5 % near copies with 10 % of the values changed),
in a fresh process: index, resolve, mark, commit, with peak RSS.

Prints CPU rows/s per stage (on the first ``--stage-rows`` rows), textstat's
(and py3langid's) share of quality scoring, PII precision / recall on the
labelled set of tests/oig/data, then the whole build of ``--rows`` rows in a
fresh process per run: wall-clock rows/s and peak RSS (the main process, and
the largest pool worker) for each worker count, and templating against the peer
a user would otherwise write: OIG's own style of f-string templating
(``random.choice`` over a paraphrase list), which has no seeding per record, no
packing and no declarative file.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from oig.dedup import DEDUP_KEY, MINHASH, DedupOptions, DedupScope, DuplicateMarker  # noqa: E402
from oig.pii import PiiDetector, PiiScrubber, evaluate  # noqa: E402
from oig.quality import QualityScorer  # noqa: E402
from oig.render import Template  # noqa: E402
from oig.schema import work_table  # noqa: E402

WORDS = (
    "river mountain village teacher garden market bridge winter summer library station museum harbour "
    "forest island engine letter window kitchen doctor farmer painter doctor festival lantern orchard "
    "meadow castle valley bakery bicycle candle compass"
).split()
VERBS = "built visited painted repaired opened closed crossed planted found carried wrote".split()


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """QA-style records: a generated passage and question; about 3% exact repeats, as real sources have."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        previous: list[str] = []
        for i in range(rows):
            if previous and rng.random() < 0.03:
                f.write(rng.choice(previous))
                continue
            sentences = [
                f"The {rng.choice(WORDS)} near the {rng.choice(WORDS)} was {rng.choice(VERBS)} by a {rng.choice(WORDS)} "
                f"in {1800 + rng.randrange(220)}."
                for _ in range(4)
            ]
            answer = rng.choice(WORDS)
            record = {
                "context": " ".join(sentences) + f" Record {i}.",
                "question": f"What did the {rng.choice(WORDS)} see near the {rng.choice(WORDS)}?",
                "answer": answer if rng.random() > 0.1 else None,
            }
            line = json.dumps(record) + "\n"
            previous = (previous + [line])[-50:]
            f.write(line)


TEMPLATE = {
    "constituent": "bench_qa",
    "context": "{{ context }}",
    "placement": ["before", "after"],
    "instructions": ["Answer using the passage.", "Read the text and answer.", "Use only this text to answer."],
    "turns": [
        {
            "human": ["{{ question }}", "Question: {{ question }}"],
            "bot": ["{{ answer }}", "The passage says: {{ answer }}."],
            "unanswerable": {"when": "not answer", "refusals": ["The passage does not say."]},
        }
    ],
}


def fstring_peer(records: list[dict]) -> list[str]:
    """OIG-style templating: f-strings and random.choice, as its unified_*.py scripts did."""
    instructions = TEMPLATE["instructions"]
    out = []
    for r in records:
        answer = r["answer"] or "The passage does not say."
        out.append(f"<human>: {random.choice(instructions)}\n\n{r['context']}\n\n{r['question']}\n<bot>: {answer}")
    return out


def timed(fn, clock=time.perf_counter):
    started = clock()
    result = fn()
    return result, clock() - started


#: Run in a fresh interpreter per build, so peak RSS is the build's own (ru_maxrss: KiB on Linux).
BUILD_SCRIPT = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from oig.build import build
started = time.perf_counter()
report = build(sys.argv[2], sys.argv[3], workers=int(sys.argv[4]))
seconds = time.perf_counter() - started
own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": seconds, "main_rss_mib": own.ru_maxrss / 1024, "worker_rss_mib": children.ru_maxrss / 1024,
                  "cpu_seconds": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
                  "main_cpu_seconds": own.ru_utime + own.ru_stime,
                  "kept": report.constituents[0].kept, "conversations": report.constituents[0].conversations}))
"""


DEDUP_SCRIPT = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import importlib.util
import oig.build  # noqa: F401  (the imports a build has, for a comparable RSS)
spec = importlib.util.spec_from_file_location("bench_oig", sys.argv[1] + "/bench/oig.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
print(json.dumps(bench.dedup_scale(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))))
"""


def synthetic_signed_batches(rows: int, batch_rows: int = 10_000, num_perm: int = 128, seed: int = 0):
    """Batches shaped like the Signer's output: 3 % exact repeats and 5 % near copies of recent rows."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    recent_keys = recent_signatures = None
    for start in range(0, rows, batch_rows):
        n = min(batch_rows, rows - start)
        keys = rng.integers(0, 2**63, (n, 2), dtype=np.uint64)
        signatures = rng.integers(0, 2**32, (n, num_perm), dtype=np.uint64).astype(np.uint32)
        if recent_keys is not None:
            exact = rng.random(n) < 0.03
            source = rng.integers(0, len(recent_keys), n)
            keys[exact], signatures[exact] = recent_keys[source[exact]], recent_signatures[source[exact]]
            near = ~exact & (rng.random(n) < 0.05)
            copies = recent_signatures[source[near]].copy()
            changed = rng.random(copies.shape) < 0.10
            copies[changed] = rng.integers(0, 2**32, int(changed.sum()), dtype=np.uint64).astype(np.uint32)
            signatures[near] = copies
        recent_keys, recent_signatures = keys, signatures
        offsets = pa.array(np.arange(0, (n + 1) * num_perm, num_perm, dtype=np.int32))
        yield pa.table(
            {
                "id": pa.array([f"x-{i:08d}" for i in range(start, start + n)]),
                "drop_reason": pa.nulls(n, pa.string()),
                DEDUP_KEY: pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(keys.tobytes())]),
                MINHASH: pa.ListArray.from_arrays(offsets, pa.array(signatures.ravel())),
            }
        )


def dedup_scale(rows: int, folder: str, workers: int) -> dict:
    """Index, resolve (partitions in a pool of ``workers``), mark and commit ``rows`` synthetic rows."""
    from collections import Counter
    from concurrent.futures import ProcessPoolExecutor

    started = time.perf_counter()
    scope = DedupScope(Path(folder), DedupOptions())
    index = scope.open("synthetic")
    for batch in synthetic_signed_batches(rows):
        index.add(batch)
    indexed = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        decisions = index.resolve(pool.map if workers > 1 else map)
    resolved = time.perf_counter()
    marker, reasons = DuplicateMarker(decisions, scope, index), Counter()
    for batch in synthetic_signed_batches(rows):
        reasons.update(marker(batch.drop_columns([DEDUP_KEY, MINHASH]))["drop_reason"].drop_null().to_pylist())
    index.commit(decisions)
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"rows": rows, "index_s": indexed - started, "resolve_s": resolved - indexed,
            "mark_commit_s": time.perf_counter() - resolved, "main_rss_mib": own.ru_maxrss / 1024,
            "worker_rss_mib": children.ru_maxrss / 1024, "removed": dict(reasons)}


def timed_build(recipe: Path, output: Path, workers: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", BUILD_SCRIPT, str(REPO), str(recipe), str(output), str(workers)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_timed(fn):
    """CPU seconds of this process: per-stage costs that the other jobs on a shared machine do not inflate."""
    return timed(fn, time.process_time)


def stage_rates(source: Path, template_path: Path, rows: int, share_batches: int, work: Path) -> dict[str, float]:
    """CPU seconds per stage, in one process, for the first ``rows`` rows."""
    with open(source, encoding="utf-8") as f:
        records = [json.loads(line) for line in islice(f, rows)]
    template = Template.load(str(template_path))
    seconds: dict[str, float] = {}
    conversations, seconds["templating"] = cpu_timed(lambda: list(template.render(records, seed=1)))
    _, seconds["peer_fstring_templating"] = cpu_timed(lambda: fstring_peer(records))
    rows = [
        {"id": f"b-{i:08d}", "text": c.text, "messages": c.messages, "source": "bench", "constituent": "bench_qa",
         "template_id": c.template_id, "seed": 1, "flags": [], "pii_replaced": 0, "moderation_label": None,
         "moderation_tags": []}
        for i, c in enumerate(conversations)
    ]
    batches = [work_table(rows[i : i + 1000]) for i in range(0, len(rows), 1000)]
    pii = PiiScrubber()
    batches, seconds["pii"] = cpu_timed(lambda: [pii(b) for b in batches])
    scorer = QualityScorer()
    scorer.setup()
    seconds.update(quality_shares(scorer, batches[:share_batches]))
    batches, seconds["quality"] = cpu_timed(lambda: [scorer(b) for b in batches])
    scope = DedupScope(work / "stage-dedup", DedupOptions())
    batches, seconds["dedup_signing"] = cpu_timed(lambda: [scope.signer(b) for b in batches])

    def index_and_mark() -> None:
        index = scope.open("bench_qa")
        for b in batches:
            index.add(b)
        marker = DuplicateMarker(index.resolve(), scope, index)
        for b in batches:
            marker(b.drop_columns([DEDUP_KEY, MINHASH]))

    _, seconds["dedup_index"] = cpu_timed(index_and_mark)
    seconds["dedup"] = seconds["dedup_signing"] + seconds["dedup_index"]
    return seconds


class ConstantLanguage:
    """Stands in for py3langid in the A/B: every text is English."""

    def classify(self, text: str) -> tuple[str, float]:
        return "en", 1.0


def quality_shares(scorer: QualityScorer, batches: list) -> dict[str, float]:
    """textstat's and py3langid's share of quality scoring, measured in place by A/B on each batch.

    Each batch is scored three times in a row: as is, with textstat's two calls
    replaced by a constant, and with the language ID replaced by a constant; the
    differences are their cost inside the stage (adjacent runs, so a shared
    machine's drifting load hits all three alike).
    """
    import textstat

    grade, ease, identifier = textstat.flesch_kincaid_grade, textstat.flesch_reading_ease, scorer._identifier
    full = without_textstat = without_langid = 0.0
    try:
        for batch in batches:
            full += cpu_timed(lambda: scorer(batch))[1]
            textstat.flesch_kincaid_grade = textstat.flesch_reading_ease = lambda text: 0.0
            without_textstat += cpu_timed(lambda: scorer(batch))[1]
            textstat.flesch_kincaid_grade, textstat.flesch_reading_ease = grade, ease
            scorer._identifier = ConstantLanguage()
            without_langid += cpu_timed(lambda: scorer(batch))[1]
            scorer._identifier = identifier
    finally:
        textstat.flesch_kincaid_grade, textstat.flesch_reading_ease = grade, ease
        scorer._identifier = identifier
    return {"textstat_share": (full - without_textstat) / full, "langid_share": (full - without_langid) / full}


def pii_figures() -> None:
    """Exact-span precision and recall per kind on the labelled set (the figures docs/benchmarks.md quotes)."""
    labelled = REPO / "tests" / "oig" / "data" / "pii_labelled.jsonl"
    examples = [json.loads(line) for line in labelled.read_text(encoding="utf-8").splitlines()]
    print(f"# PII, labelled set: {len(examples)} strings, {sum(len(e['pii']) for e in examples)} values")
    for kind, c in evaluate(PiiDetector(), examples).items():
        found, labelled_count = c["tp"] + c["fp"], c["tp"] + c["fn"]
        precision = c["tp"] / found if found else float("nan")
        print(f"{kind:>24}: precision {precision:.3f} ({c['tp']}/{found}), recall {c['tp'] / labelled_count:.3f} ({c['tp']}/{labelled_count})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts to build with")
    parser.add_argument("--stage-rows", type=int, default=100_000, help="rows for the per-stage CPU figures (0: skip)")
    parser.add_argument("--share-rows", type=int, default=10_000, help="rows for the textstat / langid A/B")
    parser.add_argument("--dedup-rows", type=int, default=0, help="time only the dedup index on this many synthetic rows")
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    if args.dedup_rows:
        for workers in worker_counts:
            with tempfile.TemporaryDirectory(prefix="oig-dedup-") as tmp:
                done = subprocess.run([sys.executable, "-c", DEDUP_SCRIPT, str(REPO), str(args.dedup_rows), tmp, str(workers)],
                                      capture_output=True, text=True, check=True)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                total = result["index_s"] + result["resolve_s"] + result["mark_commit_s"]
                print(f"dedup index, {args.dedup_rows:,} rows, {workers} worker(s): {args.dedup_rows / total:,.0f} rows/s "
                      f"(index {result['index_s']:.0f} s, resolve {result['resolve_s']:.0f} s, mark + commit "
                      f"{result['mark_commit_s']:.0f} s); peak RSS main {result['main_rss_mib']:,.0f} MiB, largest worker "
                      f"{result['worker_rss_mib']:,.0f} MiB; removed {result['removed']}", flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="oig-bench-") as tmp:
        work = Path(tmp)
        source = work / "source.jsonl"
        generate(source, args.rows)
        template_path = work / "bench_qa.yaml"
        template_path.write_text(yaml.safe_dump(TEMPLATE), encoding="utf-8")
        recipe = work / "recipe.yaml"
        recipe.write_text(
            yaml.safe_dump(
                {
                    "seed": 1,
                    "batch_size": 1000,
                    "dedup": {"scope": "global", "threshold": 0.8},
                    "constituents": [{"name": "bench_qa", "template": str(template_path), "source": {"path": str(source)}}],
                }
            ),
            encoding="utf-8",
        )
        print(f"# oig bench: {args.rows:,} generated source rows, {args.runs} runs, workers {worker_counts}", flush=True)
        pii_figures()
        stage_rows = min(args.stage_rows, args.rows)
        if stage_rows:
            seconds = stage_rates(source, template_path, stage_rows, max(1, args.share_rows // 1000), work)
            for stage in ("templating", "peer_fstring_templating", "pii", "quality", "dedup", "dedup_signing", "dedup_index"):
                print(f"{stage:>24}: {stage_rows / seconds[stage]:>10,.0f} rows/s per core  ({seconds[stage]:.1f} CPU s, {stage_rows:,} rows)")
            for part in ("textstat", "langid"):
                print(f"{part + ' share':>24}: {seconds[part + '_share']:.0%} of quality scoring (A/B in place, first {args.share_rows:,} rows)")
            print(f"{'templating vs f-string':>24}: ours is {seconds['templating'] / seconds['peer_fstring_templating']:.1f}x slower", flush=True)
        results: dict[int, list[dict]] = {w: [] for w in worker_counts}
        for run in range(args.runs):  # interleaved, so drift in the machine's load hits every worker count alike
            for workers in worker_counts:
                output = work / f"out-{workers}-{run}"
                result = timed_build(recipe, output, workers)
                results[workers].append(result)
                print(
                    f"build run {run}, {workers} worker(s): {args.rows / result['seconds']:,.0f} rows/s, "
                    f"{result['seconds']:.0f} s, peak RSS main {result['main_rss_mib']:,.0f} MiB / largest worker "
                    f"{result['worker_rss_mib']:,.0f} MiB, CPU {result['cpu_seconds']:.0f} s of which main process "
                    f"{result['main_cpu_seconds']:.0f} s (kept {result['kept']:,} of "
                    f"{result['conversations']:,})",
                    flush=True,
                )
                subprocess.run(["rm", "-rf", str(output)], check=True)
        for workers in worker_counts:
            rates = [args.rows / r["seconds"] for r in results[workers]]
            peak = max(r["main_rss_mib"] + workers * r["worker_rss_mib"] * (workers > 1) for r in results[workers])
            print(
                f"build (wall clock), {workers} worker(s): rows/s min {min(rates):,.0f} / median {statistics.median(rates):,.0f} "
                f"/ max {max(rates):,.0f}; peak RSS main + workers at most {peak:,.0f} MiB"
            )
        if 1 in results and 2 in results:
            one = [args.rows / r["seconds"] for r in results[1]]
            two = [args.rows / r["seconds"] for r in results[2]]
            pairs = [b / a for a, b in zip(one, two, strict=True)]
            print(f"2 workers vs 1: {statistics.median(two) / statistics.median(one):.2f}x (median rows/s; run pairs {min(pairs):.2f}-{max(pairs):.2f}x)")


if __name__ == "__main__":
    main()
