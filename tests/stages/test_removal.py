import hashlib

import pyarrow as pa
import pytest

from laion_hf.core.hashing import laion_hash
from laion_hf.core.stage import split_kept
from laion_hf.io.removal_lists import RemovalSets
from laion_hf.stages.removal import MissingPunsafeError, RemovalStage, keyword_pattern, resolve_threshold, url_digests


def sets(**kinds) -> RemovalSets:
    return RemovalSets(
        {kind.replace("_", "-"): pa.array(
            [bytes.fromhex(v) for v in values] if kind.startswith("url") else values,
            pa.int64() if kind == "laion_hash" else pa.binary() if kind.startswith("url") else pa.string())
         for kind, values in kinds.items()}
    )


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def reasons(table: pa.Table) -> list:
    return table["drop_reason"].to_pylist()


def test_urls_match_byte_for_byte_without_normalisation():
    batch = pa.table({"URL": ["http://a.com/x.jpg", "http://A.com/x.jpg", "http://a.com/x.jpg/", None], "TEXT": ["t"] * 4})
    stage = RemovalStage(removal=sets(url_sha256=[sha256("http://a.com/x.jpg")]))
    assert reasons(stage(batch)) == ["url-sha256", None, None, None]


TRICKY_URLS = [
    "https://example.com/caf\u00e9/\u4e2d\u6587.jpg?q=\U0001f600",  # 2-, 3- and 4-byte UTF-8
    "",
    None,
    "https://e.org/a%20b.jpg",  # percent-encoded: not the same bytes as the decoded URL below
    "https://e.org/a b.jpg",
    "http://A.com/x.jpg\x00tail\r\n",  # NUL and line breaks are bytes like any other
    "https://\u0645\u062b\u0627\u0644.\u0625\u062e\u062a\u0628\u0627\u0631/\u0635\u0648\u0631\u0629.png",
    "https://e.org/" + "x" * 100_000,  # many blocks
    "https://e.org/" + "\u00e9" * 25,  # 64 bytes of input: a block boundary
]


def hashlib_digests(urls: list, algorithm: str) -> list:
    return [None if u is None else hashlib.new(algorithm, u.encode("utf-8")).digest() for u in urls]


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_url_digests_equal_hashlib_on_tricky_urls(algorithm):
    digests = url_digests(pa.chunked_array([TRICKY_URLS[:4], [], TRICKY_URLS[4:]], pa.string()), algorithm)
    assert digests.type == pa.binary(16 if algorithm == "md5" else 32)
    assert digests.to_pylist() == hashlib_digests(TRICKY_URLS, algorithm)
    assert url_digests(pa.array([], pa.string()), algorithm).to_pylist() == []
    assert url_digests(pa.nulls(2, pa.string()), algorithm).to_pylist() == [None, None]


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_url_digests_equal_hashlib_on_real_laion_urls_in_row_order(laion_pairs, algorithm):
    urls = laion_pairs["URL"].to_pylist()
    # Three chunks, each over DataFusion's 8,192-row output batches: a reordering would show.
    chunked = pa.chunked_array([urls, list(reversed(urls)), urls[:9000]], pa.string())
    assert url_digests(chunked, algorithm).to_pylist() == hashlib_digests(urls + urls[::-1] + urls[:9000], algorithm)


def test_url_md5_and_duplicates_keep_multiplicity():
    url = "https://e.org/p.png"
    batch = pa.table({"url": [url, url, "https://e.org/q.png", "https://e.org/q.png"], "caption": ["a", "a", "b", "b"]})
    stage = RemovalStage(removal=sets(url_md5=[hashlib.md5(url.encode()).hexdigest()]))
    kept, removed = split_kept(stage(batch))
    assert removed.num_rows == 2 and kept.num_rows == 2  # both copies of each row share one fate


def test_laion_hash_uses_the_hash_column_and_null_matches_nothing():
    batch = pa.table({"URL": ["u1", "u2", "u3"], "TEXT": ["a", "b", "c"], "hash": pa.array([10, None, 30], pa.int64())})
    stage = RemovalStage(removal=sets(laion_hash=[10, laion_hash("u2", "b")]))
    # row 2's hash is NULL: it matches nothing even though hash(u2, b) is listed
    assert reasons(stage(batch)) == ["laion-hash", None, None]


def test_laion_hash_is_computed_when_the_file_has_no_hash_column_null_caption_as_empty():
    batch = pa.table({"url": ["u1", "u2", "u3"], "caption": pa.array([None, "", "c"], pa.string())})
    stage = RemovalStage(removal=sets(laion_hash=[laion_hash("u1", ""), laion_hash("u2", None)]))
    assert reasons(stage(batch)) == ["laion-hash", "laion-hash", None]


def test_sample_id_matches_sample_id_column_or_key():
    laion = pa.table({"SAMPLE_ID": pa.array([1, 2], pa.int64()), "URL": ["a", "b"], "TEXT": ["", ""]})
    download = pa.table({"url": ["a", "b"], "caption": ["", ""], "key": ["000000001", "000000002"]})
    stage = RemovalStage(removal=sets(sample_id=["2", "000000001"]))
    assert reasons(stage(laion)) == [None, "sample-id"]
    assert reasons(stage(download)) == ["sample-id", None]


def test_image_hash_from_sidecar_is_case_insensitive_and_null_matches_nothing():
    digest = "ab" * 32
    batch = pa.table({"url": ["a", "b", "c"], "caption": ["", "", ""], "sha256": [digest.upper(), None, "cd" * 32]})
    stage = RemovalStage(removal=sets(image_sha256=[digest]))
    assert stage.image_algorithms == ["sha256"]
    assert reasons(stage(batch)) == ["image-sha256", None, None]


@pytest.mark.parametrize("variant,expected", [("research", [None, None, "punsafe", None]), ("research-safe", [None, "punsafe", "punsafe", None])])
def test_punsafe_is_removed_strictly_above_the_threshold(variant, expected):
    scores = pa.array([0.45, 0.4500001, 0.9500001, None], pa.float32())
    batch = pa.table({"URL": ["a", "b", "c", "d"], "TEXT": ["", "", "", ""], "punsafe": scores})
    stage = RemovalStage(punsafe_threshold=resolve_threshold(variant, None))
    assert reasons(stage(batch)) == expected


def test_a_float32_score_equal_to_the_threshold_is_kept():
    batch = pa.table({"URL": ["a", "b"], "TEXT": ["", ""], "punsafe": pa.array([0.95, 0.3], pa.float32())})
    assert reasons(RemovalStage(punsafe_threshold=0.95)(batch)) == [None, None]
    assert reasons(RemovalStage(punsafe_threshold=0.3)(batch)) == ["punsafe", None]  # float32(0.3) > 0.3 in float64


def test_threshold_resolution():
    assert resolve_threshold("research", None) == 0.95
    assert resolve_threshold("research-safe", None) == 0.45
    assert resolve_threshold("research", 0.8) == 0.8
    assert resolve_threshold(None, None) is None
    with pytest.raises(Exception, match="unknown"):
        resolve_threshold("safe", None)


def test_variant_without_punsafe_is_a_clear_error():
    stage = RemovalStage(punsafe_threshold=0.45)
    with pytest.raises(MissingPunsafeError, match=r"shard\.parquet: the variant needs a punsafe column"):
        stage.check_columns(["url", "caption", "key"], "shard.parquet")
    RemovalStage(punsafe_threshold=0.45, flagged_hashes=pa.array([], pa.int64())).check_columns(["url", "caption"], "x")


def test_flagged_metadata_hashes_remove_download_rows_by_url_and_caption():
    batch = pa.table({"url": ["u1", "u2", "u3"], "caption": pa.array(["a", None, "c"])})
    stage = RemovalStage(punsafe_threshold=0.45, flagged_hashes=pa.array([laion_hash("u2", "")], pa.int64()))
    assert reasons(stage(batch)) == [None, "punsafe", None]


def test_keep_reference_keeps_only_rows_in_the_reference():
    batch = pa.table({"URL": ["u1", "u2", "u3"], "TEXT": ["a", "b", None]})
    reference = pa.array([laion_hash("u1", "a"), laion_hash("u3", "")], pa.int64())
    assert reasons(RemovalStage(reference_hashes=reference)(batch)) == [None, "not-in-reference", None]


def test_keywords_match_whole_words_case_insensitively():
    pattern = keyword_pattern(["badword", "a.b"])
    batch = pa.table({"URL": ["1", "2", "3", "4", "5"], "TEXT": ["a BadWord here", "badwords", "x a.b y", "axb", None]})
    assert reasons(RemovalStage(keyword_regex=pattern)(batch)) == ["keyword", None, "keyword", None, None]
    assert keyword_pattern([]) is None


def test_first_reason_wins_and_earlier_marks_are_kept():
    url = "http://x"
    batch = pa.table({"URL": [url, "y"], "TEXT": ["bad", "bad"], "punsafe": pa.array([0.99, 0.99], pa.float32()),
                      "drop_reason": pa.array([None, "language"], pa.string())})
    stage = RemovalStage(removal=sets(url_sha256=[sha256(url)]), punsafe_threshold=0.95, keyword_regex=keyword_pattern(["bad"]))
    assert reasons(stage(batch)) == ["url-sha256", "language"]


def test_stage_pickles_for_worker_processes():
    import pickle

    stage = RemovalStage(removal=sets(laion_hash=[1, 2]), punsafe_threshold=0.45)
    clone = pickle.loads(pickle.dumps(stage))
    batch = pa.table({"URL": ["a"], "TEXT": ["b"], "hash": pa.array([2], pa.int64()), "punsafe": pa.array([0.1], pa.float32())})
    assert reasons(clone(batch)) == ["laion-hash"]
