"""End to end: the shipped recipe builds a multi-config Hub-layout dataset that ``datasets`` loads."""

import json
import shutil
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import yaml

from laion_hf.core.errors import UserError
from laion_hf.io.atomic import done_marker
from oig.build import build, data_file
from oig.recipe import RecipeError
from oig.schema import OUTPUT_SCHEMA
from tests.oig.conftest import SAMPLE_RECIPE, dataset_files

pytestmark = pytest.mark.slow
CONSTITUENTS = ["squad_v2", "summarization", "dialogue", "math", "code", "lists"]


def test_counts_add_up_and_match_the_crafted_samples(sample_build):
    _, report = sample_build
    assert [c.name for c in report.constituents] == CONSTITUENTS and report.moderation is not None
    for constituent in report.all_reports():
        for stats in constituent.stages.values():
            stats.check()
        overall = constituent.overall()
        assert overall.rows_in == overall.kept + overall.removed
    by_name = {c.name: c for c in report.all_reports()}
    # the samples hold: one benchmark passage (2 packed conversations), one exact and one near duplicate,
    # a French dialogue, a banned phrase, an email and a phone number
    assert dict(by_name["squad_v2"].stages["decontaminate"].dropped) == {"contaminated": 2}
    assert dict(by_name["math"].stages["dedup"].dropped) == {"exact_duplicate": 1}
    assert dict(by_name["summarization"].stages["dedup"].dropped) == {"near_duplicate": 1}
    assert dict(by_name["dialogue"].stages["quality"].dropped) == {"wrong_language": 1, "banned_phrase": 1}
    assert by_name["dialogue"].pii == {"email": 1, "phone": 1, "values_replaced": 2}
    assert by_name["squad_v2"].records == 20 and by_name["squad_v2"].conversations == 8


def test_removed_rows_record_reason_and_kept_member(sample_build):
    output, _ = sample_build
    removed = pq.read_table(output / "removed" / "math.parquet").to_pylist()
    assert [(r["drop_reason"], r["duplicate_of"]) for r in removed] == [("exact_duplicate", "math-00000003")]
    kept_ids = [m["id"] for m in pq.read_table(output / data_file("math"))["metadata"].to_pylist()]
    assert "math-00000003" in kept_ids and removed[0]["id"] not in kept_ids


def test_every_config_has_one_schema_and_loads_with_datasets(sample_build, tmp_path, monkeypatch):
    output, report = sample_build
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    card = yaml.safe_load((output / "README.md").read_text().split("---")[1])
    names = [c["config_name"] for c in card["configs"]]
    assert names == ["all", *CONSTITUENTS, "moderation"]
    features = None
    for report_of in report.all_reports():
        assert pq.read_schema(output / data_file(report_of.name)) == OUTPUT_SCHEMA
        ds = datasets.load_dataset(str(output), report_of.name, split="train")
        assert ds.num_rows == report_of.kept
        assert {row["metadata"]["constituent"] for row in ds} == {report_of.name}
        features = features or ds.features
        assert ds.features == features
    everything = datasets.load_dataset(str(output), "all", split="train")
    assert everything.num_rows == sum(c.kept for c in report.constituents)
    assert datasets.load_dataset(str(output), split="train").num_rows == everything.num_rows  # `all` is the default
    row = everything[0]
    assert row["text"].startswith("<human>: ") and row["messages"][0]["role"] == "user"
    assert row["metadata"]["seed"] == 1234 and row["metadata"]["quality"]["language"] == "en"


def test_pii_placeholders_reach_the_output(sample_build):
    output, _ = sample_build
    texts = pq.read_table(output / data_file("dialogue"))["text"].to_pylist()
    joined = "\n".join(texts)
    assert "[EMAIL]" in joined and "[PHONE]" in joined
    assert "jo.baker@example.com" not in joined and "555-201-4477" not in joined


def test_moderation_config_carries_labels(sample_build):
    output, _ = sample_build
    rows = pq.read_table(output / data_file("moderation")).to_pylist()
    labels = {r["metadata"]["moderation_label"] for r in rows}
    assert labels == {"casual", "possibly needs caution", "probably needs caution", "needs caution", "needs intervention"}
    urgent = next(r for r in rows if r["messages"][0]["content"] == "I want to hurt myself tonight.")
    assert urgent["messages"][1]["content"] == "needs intervention, self-harm, unsafe, urgent"
    assert urgent["metadata"]["moderation_tags"] == ["self-harm", "unsafe", "urgent"]


def test_two_builds_are_byte_identical_whatever_the_worker_count(sample_build, tmp_path):
    output, _ = sample_build
    again = tmp_path / "again"
    build(SAMPLE_RECIPE, str(again), workers=2)
    assert dataset_files(again) == dataset_files(output)


def test_an_interrupted_build_resumes_to_the_same_bytes(sample_build, tmp_path):
    output, _ = sample_build
    resumed = tmp_path / "resumed"
    shutil.copytree(output, resumed)
    # as if the build died while writing `math`: its files and every later marker are gone
    (resumed / data_file("math")).unlink()
    for name in ["math", "code", "lists", "moderation"]:
        Path(done_marker(str(resumed / ".build"), name)).unlink()
    (resumed / "README.md").unlink()
    (resumed / "math" / "train-00000-of-00001.parquet.0badc0de.tmp").write_bytes(b"half a file")
    report = build(SAMPLE_RECIPE, str(resumed))
    assert dataset_files(resumed) == dataset_files(output)
    assert json.loads(Path(done_marker(str(resumed / ".build"), "squad_v2")).read_text())["conversations"] == 8
    assert report.constituents[0].kept == 6


def test_dedup_across_constituents_points_at_the_first(tmp_path):
    recipe = yaml.safe_load(SAMPLE_RECIPE.read_text())
    math = next(c for c in recipe["constituents"] if c["name"] == "math")
    math["source"]["path"] = str(SAMPLE_RECIPE.parent / math["source"]["path"])
    recipe["constituents"] = [math, dict(math, name="math_copy", template="math")]
    del recipe["moderation"], recipe["decontaminate"]
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    report = build(tmp_path / "r.yaml", str(tmp_path / "out"))
    first, copy = report.constituents
    assert first.kept == first.conversations - 1  # the sample's own exact duplicate
    assert copy.kept == 0 and dict(copy.stages["dedup"].dropped) == {"exact_duplicate": copy.conversations}
    removed = pq.read_table(tmp_path / "out" / "removed" / "math_copy.parquet").to_pylist()
    assert all(r["duplicate_of"].startswith("math-") for r in removed)


def test_recipe_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"constituents": [{"name": "All", "source": {"path": "x.jsonl"}}]}))
    with pytest.raises(RecipeError, match=r"bad\.yaml:2: constituents\[0\]: name 'All' must be lower-case"):
        build(path, str(tmp_path / "out"))
    path.write_text(yaml.safe_dump({"constituents": [{"name": "all", "source": {"path": "x.jsonl"}}]}))
    with pytest.raises(RecipeError, match="reserved"):
        build(path, str(tmp_path / "out"))
    path.write_text(yaml.safe_dump({"constituent": []}))
    with pytest.raises(RecipeError, match=r"unknown keys \['constituent'\]"):
        build(path, str(tmp_path / "out"))
    path.write_text(yaml.safe_dump({"dedup": {"treshold": 0.5}, "constituents": [{"name": "a", "source": {"path": "x.jsonl"}}]}))
    with pytest.raises(RecipeError, match=r"bad\.yaml: dedup: unknown keys \['treshold'\]"):
        build(path, str(tmp_path / "out"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed: twelve\n", r"bad\.yaml:1: seed: expected an integer, got 'twelve'"),
        ("seed: 1\nbatch_size: 0\n", r"bad\.yaml:2: batch_size: expected an integer >= 1, got 0"),
        ("quality:\n  min_words: five\n", r"bad\.yaml:2: quality\.min_words: quality threshold 'min_words' expects an integer or null \(off\), got 'five'"),
        ("quality:\n  languages: en\n", r"bad\.yaml:2: quality\.languages: .* expects a list of strings or null \(off\), got 'en'"),
        ("dedup:\n  threshold: high\n", r"bad\.yaml:2: dedup\.threshold: expected a number in \(0, 1\], got 'high'"),
        ("pii:\n  phone_regions: [US, XX]\n", r"bad\.yaml:2: pii\.phone_regions: .*unknown region codes \['XX'\]"),
    ],
)
def test_recipe_values_of_the_wrong_type_name_file_line_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    constituent = "constituents:\n  - name: a\n    source: {path: x.jsonl}\n"
    path.write_text(text + constituent)
    with pytest.raises(RecipeError if "quality" not in text else UserError, match=message):
        build(path, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_constituent_thresholds_of_the_wrong_type_name_their_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 3\nconstituents:\n  - name: a\n    source: {path: x.jsonl}\n    quality:\n      max_grade: [12]\n")
    with pytest.raises(UserError, match=r"bad\.yaml:6: constituents\[0\]\.quality\.max_grade: .* expects a number or null"):
        build(path, str(tmp_path / "out"))


PLANTED = {
    "email": ["jane.doe@example.com", "J.O.Baker+news@mail.example.co.uk"],
    "phone": ["07700 900123", "+14155552671", "+44 (0)28 7128 1337", "(415) 555-2671", "+49 30 901820", "01 42 68 53 00"],
    "ip_address": ["192.168.10.25", "2001:db8::1", "fe80::1ff:fe23:4567:890a"],
    "credit_card": ["4111 1111 1111 1111", "3782 822463 10005"],
}


def test_planted_pii_in_every_format_leaves_the_build_as_placeholders(tmp_path):
    rows = []
    names = iter("Ada Ben Cleo Dev Eli Fay Gus Hal Ivy Jon Kai Lea Mo".split())
    for kind, values in PLANTED.items():
        for value in values:
            user = f"Please keep this safe for me, {next(names)}: {value}. Thank you very much."
            bot = f"I will not repeat {value} to anyone, but I have noted it for you."
            rows.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": bot}]})
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "r.yaml").write_text(
        yaml.safe_dump({"constituents": [{"name": "chat", "source": {"path": "chat.jsonl"}}], "dedup": {"near": False}})
    )
    report = build(tmp_path / "r.yaml", str(tmp_path / "out"))
    (chat,) = report.constituents
    assert chat.kept == len(rows)
    assert dict(chat.pii) == {kind: len(values) for kind, values in PLANTED.items()} | {"values_replaced": 2 * len(rows)}
    published = "\n".join(path.read_bytes().decode("utf-8", "replace") for path in (tmp_path / "out").rglob("*.md"))
    texts = pq.read_table(tmp_path / "out" / data_file("chat"))["text"].to_pylist()
    placeholders = {"email": "[EMAIL]", "phone": "[PHONE]", "ip_address": "[IP_ADDRESS]", "credit_card": "[CREDIT_CARD]"}
    expected = [placeholders[kind] for kind, values in PLANTED.items() for _ in values]
    assert [t.split(": ", 2)[2] for t in texts] == [
        f"{p}. Thank you very much.\n<bot>: I will not repeat {p} to anyone, but I have noted it for you." for p in expected
    ]
    assert not any(value in published for values in PLANTED.values() for value in values)


def test_real_files_build_every_config_and_load_with_datasets(shared_dir, tmp_path, monkeypatch):
    """Issue 12's done-when: nested SQuAD v2 with refusals, XSum (JSON Lines named .json), chat as dialogue."""
    real = shared_dir / "data" / "real"
    if not (real / "squad_v2_dev-v2.0.json").exists():
        pytest.skip(f"{real} is absent")
    monkeypatch.setenv("OIG_REAL_DATA", str(real))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    output = tmp_path / "real"
    report = build(SAMPLE_RECIPE.parent / "real.yaml", str(output), workers=2)
    counts = {c.name: (c.records, c.conversations, c.kept) for c in report.constituents}
    assert counts == {"squad_v2": (14, 6, 6), "xsum": (10, 10, 10), "chat": (32, 32, 32)}
    squad = pq.read_table(output / data_file("squad_v2")).to_pylist()
    bot_turns = [m["content"] for row in squad for m in row["messages"] if m["role"] == "assistant"]
    refusals = ("The passage does not say.", "I cannot answer that from the passage; it does not mention it.", "That information is not in the text.")
    assert len(bot_turns) == 14 and sum(turn in refusals for turn in bot_turns) == 6  # the 6 `is_impossible` questions
    assert squad[0]["messages"][0]["content"].count("Normans") >= 1
    xsum = "\n".join(pq.read_table(output / data_file("xsum"))["text"].to_pylist())
    assert "€78bn (£57bn)" in xsum and "â‚¬" not in xsum
    chat = pq.read_table(output / data_file("chat")).to_pylist()
    source = [json.loads(line)["messages"] for line in (real / "sft_chat.jsonl").read_text().splitlines()]
    assert [row["messages"] for row in chat] == source
    for name in ["all", "squad_v2", "xsum", "chat"]:
        ds = datasets.load_dataset(str(output), name, split="train")
        assert ds.num_rows == (48 if name == "all" else counts[name][2])
        assert set(ds.features) == {"text", "messages", "metadata"}
