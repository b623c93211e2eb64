import pytest

from laion_hf.core.errors import UserError
from laion_hf.core.stage import count_reasons, split_kept
from oig.quality import QualityScorer, QualityThresholds
from tests.oig.helpers import batch, conversation

GOOD = conversation(
    "Can you tell me why the sky looks blue on a clear day?",
    "Sunlight is scattered by the air, and blue light is scattered much more than red light, so the sky looks blue.",
)
CASES = {
    "no_final_bot_turn": [{"role": "user", "content": "Tell me a story about a brave little mouse please."}],
    "empty_turn": conversation("What is the capital of France, please tell me?", "   "),
    "banned_phrase": conversation("What is the weather like today in Paris?", "As an AI language model, I cannot know that today."),
    "too_short": conversation("Hi", "Hello"),
    "repetitive": conversation("Say it again and again.", " ".join(["again"] * 60)),
    "wrong_language": conversation(
        "Peux-tu me dire pourquoi le ciel est bleu pendant la journée ?",
        "La lumière du soleil est diffusée par l'air, et la lumière bleue est beaucoup plus diffusée que la rouge.",
    ),
    "grade_too_high": conversation(
        "Explain.",
        "Notwithstanding institutional considerations, comprehensive epistemological reconceptualisation "
        "necessitates interdisciplinary methodological harmonisation across heterogeneous organisational "
        "infrastructures, notwithstanding considerable administrative counterproductivity and unprecedented "
        "multidimensional institutionalisation characteristics.",
    ),
}


@pytest.fixture(scope="module")
def scorer():
    s = QualityScorer(QualityThresholds(max_grade=16))
    s.setup()
    return s


def test_each_check_removes_its_crafted_row_and_counts_it(scorer):
    rows = [GOOD, *CASES.values()]
    marked = scorer(batch(rows))
    kept, removed = split_kept(marked)
    assert kept["id"].to_pylist() == ["test-00000000"]
    assert dict(count_reasons(removed)) == dict.fromkeys(CASES, 1)
    assert removed["drop_reason"].to_pylist() == list(CASES)


def test_scores_are_textstat_and_language_id(scorer):
    import textstat

    scored = scorer(batch([GOOD])).to_pylist()[0]
    prose = "\n".join(m["content"] for m in GOOD)
    assert scored["flesch_kincaid_grade"] == pytest.approx(textstat.flesch_kincaid_grade(prose))
    assert scored["flesch_reading_ease"] == pytest.approx(textstat.flesch_reading_ease(prose))
    assert scored["language"] == "en" and scored["language_score"] > 0.9
    assert scored["n_words"] == len(prose.split()) and 0.5 < scored["unique_word_ratio"] <= 1


def test_thresholds_per_constituent_switch_checks_off():
    code = QualityScorer(QualityThresholds.from_mapping({"languages": None, "max_grade": None}, "recipe"))
    kept, _ = split_kept(code(batch([CASES["wrong_language"], CASES["grade_too_high"]])))
    assert kept.num_rows == 2


def test_rows_dropped_earlier_are_not_rescored(scorer):
    import pyarrow as pa

    from laion_hf.core.stage import mark_dropped

    earlier = mark_dropped(batch([CASES["too_short"]]), pa.array([True]), "earlier")
    marked = scorer(earlier)
    assert marked["drop_reason"].to_pylist() == ["earlier"] and marked["n_words"].to_pylist() == [None]


def test_unknown_threshold_is_an_error_naming_where():
    with pytest.raises(UserError, match="recipe.yaml: constituents\\[0\\].quality: unknown quality threshold 'max_grad'"):
        QualityThresholds.from_mapping({"max_grad": 3}, "recipe.yaml: constituents[0].quality")
