import json

import pytest

from laion_hf.core.errors import UserError
from laion_hf.core.stage import count_reasons, split_kept
from oig.decontaminate import BenchmarkIndex, Decontaminator
from tests.oig.helpers import batch, conversation

HELD_OUT = "Which gas do plants take in from the air to make their food through photosynthesis in sunlight"
WORDS = HELD_OUT.split()


@pytest.fixture
def index(tmp_path):
    records = [{"question": HELD_OUT, "answer": "carbon dioxide"}, {"question": "Too short to index.", "answer": "x"}]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return BenchmarkIndex.from_sources([{"path": "test.jsonl", "text_fields": ["question"]}], n=13, base_dir=tmp_path)


def test_thirteen_shared_words_contaminate_twelve_do_not(index):
    assert dict(index.counts) == {"indexed": 1, "too_short_to_index": 1}
    rows = [
        conversation("QUIZ: " + " ".join(WORDS[2:15]).upper() + "?", "Carbon dioxide."),  # 13 words, other case
        conversation("Quiz: " + " ".join(WORDS[2:14]) + " and more", "Carbon dioxide."),  # 12 words
        conversation("What do bees make?", "Honey."),
    ]
    kept, removed = split_kept(Decontaminator(index, "drop")(batch(rows)))
    assert kept["id"].to_pylist() == ["test-00000001", "test-00000002"]
    assert dict(count_reasons(removed)) == {"contaminated": 1}


def test_flag_action_keeps_the_row_and_flags_it(index):
    marked = Decontaminator(index, "flag")(batch([conversation(HELD_OUT, "Carbon dioxide."), conversation("Hi there", "Hello")]))
    assert "drop_reason" not in marked.column_names  # nothing dropped
    assert marked["flags"].to_pylist() == [["contaminated"], []]


def test_bad_configuration_is_a_user_error(index, tmp_path):
    with pytest.raises(UserError, match="action must be one of"):
        Decontaminator(index, "delete")
    with pytest.raises(UserError, match="text_fields"):
        BenchmarkIndex.from_sources([{"path": "test.jsonl"}], base_dir=tmp_path)
