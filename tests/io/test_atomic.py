"""Atomic commits: a failed block leaves nothing; done markers carry stats."""

from __future__ import annotations

import pytest

from laion_hf.io.atomic import atomic_path, mark_done, read_done, remove_stale_temporaries, write_json


def test_atomic_path_renames_only_on_success(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(str(target)) as tmp:
        open(tmp, "w").write("complete")
        assert not target.exists()
    assert target.read_text() == "complete"

    with pytest.raises(RuntimeError), atomic_path(str(target)) as tmp:
        open(tmp, "w").write("half")
        raise RuntimeError("crash")
    assert target.read_text() == "complete"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_done_marker_round_trip(tmp_path):
    assert read_done(str(tmp_path), "00000") is None
    mark_done(str(tmp_path), "00000", {"kept": 3})
    assert read_done(str(tmp_path), "00000") == {"kept": 3}


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / "00000.tar.1234abcd.tmp").write_bytes(b"half")
    write_json(str(tmp_path / "keep.json"), {"a": 1})
    assert remove_stale_temporaries(str(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]


def test_atomic_path_works_on_fsspec_urls():
    import fsspec

    with atomic_path("memory://bucket/x.json") as tmp, fsspec.open(tmp, "w") as f:
        f.write("{}")
    assert fsspec.filesystem("memory").cat("/bucket/x.json") == b"{}"
