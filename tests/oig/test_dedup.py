import random

import numpy as np
import pyarrow as pa

from laion_hf.core.stage import count_reasons, mark_dropped, split_kept
from oig.dedup import DedupOptions, DedupScope, band_keys
from oig.schema import format_text
from tests.oig.helpers import batch, conversation, deduplicate

ARTICLE = (
    "Students at a secondary school have built a small weather station on the roof of their science block. "
    "The station measures temperature, rain, wind speed and air pressure every ten minutes and sends the readings "
    "to a website that anyone can visit. The students wrote the software themselves during an after-school club. "
    "Their teacher said the project taught them more about programming and statistics than any textbook."
)


def test_exact_near_and_distinct_rows_with_kept_member_recorded(tmp_path):
    rows = [
        conversation("Summarise this.", ARTICLE),
        conversation("SUMMARISE this!!", ARTICLE.replace(".", " .")),  # same after normalisation
        conversation("Summarise this.", ARTICLE.replace("the software", "all of the software")),  # near
        conversation("What is two plus two?", "Two plus two is four, because adding two to two gives four."),
    ]
    (marked,) = deduplicate(DedupScope(tmp_path, DedupOptions(threshold=0.7)), "test", [batch(rows)])
    kept, removed = split_kept(marked)
    assert kept["id"].to_pylist() == ["test-00000000", "test-00000003"]
    assert dict(count_reasons(removed)) == {"exact_duplicate": 1, "near_duplicate": 1}
    assert removed["duplicate_of"].to_pylist() == ["test-00000000", "test-00000000"]


def test_one_scope_dedups_across_batches_and_constituents(tmp_path):
    scope = DedupScope(tmp_path / "global", DedupOptions())
    (first,) = deduplicate(scope, "summaries", [batch([conversation("Summarise this.", ARTICLE)], constituent="summaries")])
    (second,) = deduplicate(scope, "news", [batch([conversation("Summarise this.", ARTICLE)], constituent="news")])
    assert split_kept(first)[0].num_rows == 1
    assert second["drop_reason"].to_pylist() == ["exact_duplicate"]
    assert second["duplicate_of"].to_pylist() == ["summaries-00000000"]
    # a separate scope (dedup scope: constituent) keeps both
    (alone,) = deduplicate(DedupScope(tmp_path / "news", DedupOptions()), "news", [batch([conversation("Summarise this.", ARTICLE)], constituent="news")])
    assert alone["drop_reason"].to_pylist() == [None]


def test_a_resumed_scope_reloads_finished_stores_as_kept_members(tmp_path):
    deduplicate(DedupScope(tmp_path, DedupOptions()), "old", [batch([conversation("Summarise this.", ARTICLE)], constituent="old")])
    resumed = DedupScope(tmp_path, DedupOptions())
    assert resumed.load("old") and not resumed.load("never_built")
    (marked,) = deduplicate(resumed, "new", [batch([conversation("Summarise this.", ARTICLE.replace("ten", "five"))], constituent="new")])
    assert marked["drop_reason"].to_pylist() == ["near_duplicate"] and marked["duplicate_of"].to_pylist() == ["old-00000000"]


def test_exact_only_mode_keeps_near_duplicates(tmp_path):
    rows = [conversation("Q", ARTICLE), conversation("Q", ARTICLE.replace("ten", "five")), conversation("Q", ARTICLE)]
    (marked,) = deduplicate(DedupScope(tmp_path, DedupOptions(near=False)), "test", [batch(rows)])
    assert marked["drop_reason"].to_pylist() == [None, None, "exact_duplicate"]


def test_rows_already_removed_are_not_indexed_and_batches_keep_their_order(tmp_path):
    rows = [conversation("Q", ARTICLE), conversation("Q", ARTICLE), conversation("Q", ARTICLE)]
    first = mark_dropped(batch(rows[:2]), pa.array([True, False]), "too_short")  # the first copy failed quality
    (a, b) = deduplicate(DedupScope(tmp_path, DedupOptions()), "test", [first, batch(rows[2:], start=2)])
    assert a["drop_reason"].to_pylist() == ["too_short", None]
    assert b["drop_reason"].to_pylist() == ["exact_duplicate"] and b["duplicate_of"].to_pylist() == ["test-00000001"]


def reference_decisions(texts: list[str], options: DedupOptions, signer) -> list[tuple[str | None, int | None]]:
    """The rule written plainly: in order, compare each row with every earlier kept row sharing an LSH band."""
    signed = [signer.sign(t) for t in texts]
    bands, width = options.bands
    keys = band_keys(np.array([s for _, s in signed], dtype=np.uint32), bands, width)
    kept: list[int] = []
    decisions: list[tuple[str | None, int | None]] = []
    for i, (key, signature) in enumerate(signed):
        exact = next((j for j in kept if signed[j][0] == key), None)
        if exact is not None:
            decisions.append(("exact_duplicate", exact))
            continue
        scored = [
            (float(np.mean(signed[j][1] == signature)), j) for j in kept if set(keys[j].tolist()) & set(keys[i].tolist())
        ]
        scored = [(-s, j) for s, j in scored if s >= options.threshold]
        if scored:
            decisions.append(("near_duplicate", min(scored)[1]))
        else:
            kept.append(i)
            decisions.append((None, None))
    return decisions


def test_disk_partitions_give_the_same_decisions_as_the_plain_rule(tmp_path):
    """300 rows in clusters of near copies and repeats, split over two constituents and uneven batches."""
    rng = random.Random(7)
    vocabulary = [f"w{i}" for i in range(400)]
    bases = [[rng.choice(vocabulary) for _ in range(60)] for _ in range(40)]
    texts = []
    for _ in range(300):
        words = list(rng.choice(bases))
        for _ in range(rng.choice([0, 0, 1, 2, 4, 8, 30])):
            words[rng.randrange(len(words))] = rng.choice(vocabulary)
        texts.append(" ".join(words))
    options = DedupOptions(threshold=0.7)
    scope = DedupScope(tmp_path, options)
    conversations = [conversation("Q", t) for t in texts]
    first = deduplicate(scope, "a", [batch(conversations[:70], "a"), batch(conversations[70:150], "a", start=70)])
    second = deduplicate(scope, "b", [batch(conversations[150:], "b", start=150)])
    got = [(r["drop_reason"], r["duplicate_of"]) for table in [*first, *second] for r in table.to_pylist()]
    ids = [f"a-{i:08d}" if i < 150 else f"b-{i:08d}" for i in range(300)]
    formatted = [format_text(c) for c in conversations]
    expected = [(reason, None if j is None else ids[j]) for reason, j in reference_decisions(formatted, options, scope.signer)]
    assert got == expected
    assert {reason for reason, _ in got} == {None, "exact_duplicate", "near_duplicate"}


def test_a_store_loaded_at_another_place_in_the_scope_still_resolves(tmp_path):
    first = DedupScope(tmp_path, DedupOptions())
    deduplicate(first, "a", [batch([conversation("What is two plus two?", "Four, because two and two make four.")], "a")])
    deduplicate(first, "b", [batch([conversation("Summarise this.", ARTICLE)], "b")])
    later = DedupScope(tmp_path, DedupOptions())
    assert later.load("b")  # now the scope's first store, not its second
    (marked,) = deduplicate(later, "c", [batch([conversation("Summarise this.", ARTICLE), conversation("Summarise this.", ARTICLE.replace("ten", "five"))], "c")])
    assert marked["drop_reason"].to_pylist() == ["exact_duplicate", "near_duplicate"]
    assert marked["duplicate_of"].to_pylist() == ["b-00000000", "b-00000000"]
