"""WebDataset tars: sample grouping, byte-identical rewrite, truncated tars named."""

from __future__ import annotations

import pytest

from laion_hf.io.tar import CorruptTarError, iter_members, iter_samples, rewrite_tar, sample_key, write_samples


def test_sample_key_is_everything_before_the_first_dot():
    assert sample_key("shard/000010005.jpg") == "000010005"
    assert sample_key("000010005.seg.json") == "000010005"


def test_rewrite_keeps_members_byte_identical(tmp_path):
    src, dst = str(tmp_path / "a.tar"), str(tmp_path / "b.tar")
    samples = [(f"00000{i:04d}", {"jpg": bytes([i]) * 5000, "txt": b"c", "json": b"{}"}) for i in range(4)]
    assert write_samples(src, samples) == 4
    result = rewrite_tar(src, dst, keep=lambda key: key != "000000002")
    assert result.removed == ["000000002"] and len(result.kept) == 3
    before = {info.name: (info.mode, info.mtime, data) for info, data in iter_members(src)}
    after = {info.name: (info.mode, info.mtime, data) for info, data in iter_members(dst)}
    assert after == {name: v for name, v in before.items() if not name.startswith("000000002")}
    assert [k for k, _ in iter_samples(dst)] == ["000000000", "000000001", "000000003"]


def test_truncated_tar_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "00007.tar"
    write_samples(str(path), [("000070000", {"jpg": b"x" * 20000})])
    path.write_bytes(path.read_bytes()[:6000])
    with pytest.raises(CorruptTarError, match="00007.tar"):
        list(iter_samples(str(path)))


def test_keys_with_dots_are_refused(tmp_path):
    with pytest.raises(ValueError, match="dots"):
        write_samples(str(tmp_path / "x.tar"), [("a.b", {"jpg": b""})])
