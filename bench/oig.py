"""Benchmark: OIG build throughput (templating + PII + quality + dedup) on generated source rows.

    .venv/bin/python bench/oig.py [--rows 100000] [--runs 3]

Prints CPU rows/s per stage, textstat's (and py3langid's) share of quality
scoring, the whole build (wall clock) with 1 worker vs 2 (the process pool runs
PII + quality, the slowest stage, + dedup signatures),
and templating against the peer a user would otherwise write: OIG's own style
of f-string templating (``random.choice`` over a paraphrase list), which has
no seeding per record, no packing and no declarative file.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from oig.build import build  # noqa: E402
from oig.dedup import Deduplicator  # noqa: E402
from oig.pii import PiiScrubber  # noqa: E402
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


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the build's worker pool)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def cpu_timed(fn):
    """CPU seconds of this process: per-stage costs that the other jobs on a shared machine do not inflate."""
    return timed(fn, time.process_time)


def stage_rates(source: Path, template_path: Path, share_batches: int) -> dict[str, float]:
    """CPU seconds per stage, in one process, for the whole input."""
    records = [json.loads(line) for line in open(source, encoding="utf-8")]
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
    dedup = Deduplicator()
    batches, seconds["dedup_signing"] = cpu_timed(lambda: [dedup.signer(b) for b in batches])
    _, seconds["dedup_index"] = cpu_timed(lambda: [dedup(b) for b in batches])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--share-rows", type=int, default=10_000, help="rows for the textstat / langid A/B")
    args = parser.parse_args()
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
        print(f"# oig bench: {args.rows:,} generated source rows, {args.runs} runs", flush=True)
        seconds = stage_rates(source, template_path, max(1, args.share_rows // 1000))
        for stage in ("templating", "peer_fstring_templating", "pii", "quality", "dedup", "dedup_signing", "dedup_index"):
            print(f"{stage:>24}: {args.rows / seconds[stage]:>10,.0f} rows/s per core  ({seconds[stage]:.1f} CPU s)")
        for part in ("textstat", "langid"):
            print(f"{part + ' share':>24}: {seconds[part + '_share']:.0%} of quality scoring (A/B in place, first {args.share_rows:,} rows)")
        print(f"{'templating vs f-string':>24}: ours is {seconds['templating'] / seconds['peer_fstring_templating']:.1f}x slower")
        totals: dict[int, list[float]] = {1: [], 2: []}
        cpu: dict[int, list[float]] = {1: [], 2: []}
        for run in range(args.runs):  # interleaved, so drift in the machine's load hits both alike
            for workers in (1, 2):
                before = cpu_seconds()
                report, elapsed = timed(lambda: build(recipe, str(work / f"out-{workers}-{run}"), workers=workers))
                totals[workers].append(args.rows / elapsed)
                cpu[workers].append(cpu_seconds() - before)
        for workers in (1, 2):
            runs = totals[workers]
            print(
                f"build (wall clock), {workers} worker(s): rows/s min {min(runs):,.0f} / median {statistics.median(runs):,.0f} "
                f"/ max {max(runs):,.0f}; CPU s (all processes) median {statistics.median(cpu[workers]):.1f}"
                f"  (kept {report.constituents[0].kept:,} of {report.constituents[0].conversations:,})",
                flush=True,
            )
        ratio = statistics.median(totals[2]) / statistics.median(totals[1])
        pairs = [two / one for one, two in zip(totals[1], totals[2], strict=True)]
        print(f"2 workers vs 1: {ratio:.2f}x (median rows/s; run pairs {min(pairs):.2f}-{max(pairs):.2f}x)")


if __name__ == "__main__":
    main()
