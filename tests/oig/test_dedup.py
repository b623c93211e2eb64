from laion_hf.stages.base import count_reasons, split_kept
from oig.dedup import Deduplicator

from tests.oig.helpers import batch, conversation

ARTICLE = (
    "Students at a secondary school have built a small weather station on the roof of their science block. "
    "The station measures temperature, rain, wind speed and air pressure every ten minutes and sends the readings "
    "to a website that anyone can visit. The students wrote the software themselves during an after-school club. "
    "Their teacher said the project taught them more about programming and statistics than any textbook."
)


def test_exact_near_and_distinct_rows_with_kept_member_recorded():
    rows = [
        conversation("Summarise this.", ARTICLE),
        conversation("SUMMARISE this!!", ARTICLE.replace(".", " .")),  # same after normalisation
        conversation("Summarise this.", ARTICLE.replace("the software", "all of the software")),  # near
        conversation("What is two plus two?", "Two plus two is four, because adding two to two gives four."),
    ]
    dedup = Deduplicator(threshold=0.7)
    marked = dedup(batch(rows))
    kept, removed = split_kept(marked)
    assert kept["id"].to_pylist() == ["test-00000000", "test-00000003"]
    assert dict(count_reasons(removed)) == {"exact_duplicate": 1, "near_duplicate": 1}
    assert removed["duplicate_of"].to_pylist() == ["test-00000000", "test-00000000"]


def test_one_index_dedups_across_batches_and_constituents():
    dedup = Deduplicator()
    first = dedup(batch([conversation("Summarise this.", ARTICLE)], constituent="summaries"))
    second = dedup(batch([conversation("Summarise this.", ARTICLE)], constituent="news"))
    assert split_kept(first)[0].num_rows == 1
    assert second["drop_reason"].to_pylist() == ["exact_duplicate"]
    assert second["duplicate_of"].to_pylist() == ["summaries-00000000"]
    # separate indexes (scope: constituent) keep both
    assert Deduplicator()(batch([conversation("Summarise this.", ARTICLE)], constituent="news"))["drop_reason"].to_pylist() == [None]


def test_reindexed_rows_act_as_kept_members():
    dedup = Deduplicator()
    dedup.add("old-1", "<human>: Summarise this.\n<bot>: " + ARTICLE)
    marked = dedup(batch([conversation("Summarise this.", ARTICLE.replace("ten", "five"))]))
    assert marked["drop_reason"].to_pylist() == ["near_duplicate"] and marked["duplicate_of"].to_pylist() == ["old-1"]


def test_exact_only_mode_keeps_near_duplicates():
    dedup = Deduplicator(near=False)
    marked = dedup(batch([conversation("Q", ARTICLE), conversation("Q", ARTICLE.replace("ten", "five"))]))
    assert marked["drop_reason"].to_pylist() == [None, None]
