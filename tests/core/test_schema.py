"""Column resolution across LAION families and clear errors for missing columns."""

from __future__ import annotations

import pytest

from laion_hf.core.schema import (
    FAMILIES,
    IMG2DATASET,
    LAION_5B_JOINED,
    LAION_5B_MULTI,
    RELAION,
    SchemaError,
    detect_family,
    require_columns,
    resolve_columns,
)


def test_caption_resolves_from_text_or_caption_case_insensitively():
    assert resolve_columns(LAION_5B_JOINED.names, ["url", "caption"]) == {"url": "URL", "caption": "TEXT"}
    assert resolve_columns(RELAION.names, ["url", "caption"]) == {"url": "url", "caption": "caption"}
    assert resolve_columns(["Url", "Text"], ["url", "caption"]) == {"url": "Url", "caption": "Text"}


def test_absent_field_resolves_to_none():
    assert resolve_columns(LAION_5B_MULTI.names, ["punsafe", "language"]) == {"punsafe": None, "language": "LANGUAGE"}


def test_require_columns_names_file_and_missing_fields():
    with pytest.raises(SchemaError, match=r"part-0\.parquet: missing required column\(s\) punsafe"):
        require_columns(["URL", "TEXT"], ["url", "caption", "punsafe"], "part-0.parquet")


def test_family_schemas_match_the_published_layouts():
    assert LAION_5B_JOINED.names == ["URL", "TEXT", "WIDTH", "HEIGHT", "similarity", "hash", "punsafe", "pwatermark"]
    assert str(LAION_5B_JOINED.field("hash").type) == "int64"
    assert str(LAION_5B_JOINED.field("punsafe").type) == "float"
    assert LAION_5B_MULTI.names[-1] == "LANGUAGE"
    assert IMG2DATASET.names[:4] == ["url", "caption", "key", "status"]


@pytest.mark.parametrize("family", ["laion5b-joined", "relaion5b", "img2dataset", "laion5b-multi"])
def test_detect_family_is_order_and_case_insensitive(family):
    names = [n.upper() for n in reversed(FAMILIES[family].names)]
    import pyarrow as pa

    assert detect_family(pa.schema([(n, pa.string()) for n in names])) == family


def test_canonical_names_keep_both_pairs_of_a_download_saved_with_laions_columns():
    from laion_hf.core.schema import canonical_names

    names = ["url", "caption", "key", "width", "height", "WIDTH", "HEIGHT", "TEXT"]
    assert canonical_names(names) == {
        "url": "url", "caption": "caption", "key": "key", "width": "width", "height": "height",
        "WIDTH": "laion_width", "HEIGHT": "laion_height", "TEXT": "text",
    }
    swapped = canonical_names(names, swap_width_height=True)  # LAION-5B's quirk is in LAION's pair only
    assert (swapped["width"], swapped["WIDTH"], swapped["HEIGHT"]) == ("width", "laion_height", "laion_width")
    assert canonical_names(LAION_5B_JOINED.names, swap_width_height=True)["WIDTH"] == "height"
    assert len(set(canonical_names(names).values())) == len(names)
