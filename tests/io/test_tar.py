"""WebDataset tars: sample grouping, byte-identical rewrite, truncated tars named."""

from __future__ import annotations

import io
import tarfile

import pytest

from laion_hf.io.tar import (
    CorruptTarError,
    index_samples,
    iter_members,
    iter_samples,
    read_span,
    rewrite_tar,
    sample_key,
    write_samples,
)
from tests.damaged_shards import CUTS, cut_tar, member_offsets


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


def three_samples(path):
    write_samples(str(path), [(f"0000{i}", {"jpg": bytes([i]) * 1000, "txt": b"t"}) for i in range(3)])
    return member_offsets(path)


@pytest.mark.parametrize("how", CUTS)
def test_tar_cut_in_a_later_sample_is_an_error_naming_the_file(tmp_path, how):
    path = tmp_path / "00008.tar"
    three_samples(path)
    assert cut_tar(path, how) == "00001"
    with pytest.raises(CorruptTarError, match="00008.tar"):
        list(iter_samples(str(path)))
    with pytest.raises(CorruptTarError, match="00008.tar"):
        index_samples(str(path))


def test_tar_ending_right_after_its_last_member_is_truncated(tmp_path):
    """No end-of-archive marker at all: the file may have held more samples."""
    path = tmp_path / "00009.tar"
    name, offset, size = three_samples(path)[-1]
    path.write_bytes(path.read_bytes()[: offset + 512 + 512])
    with pytest.raises(CorruptTarError, match=r"00009.tar: truncated: no end-of-archive marker at byte 7680"):
        list(iter_members(str(path)))


def test_a_damaged_header_between_members_is_an_error(tmp_path):
    path = tmp_path / "00010.tar"
    _, offset, _ = three_samples(path)[2]
    data = bytearray(path.read_bytes())
    data[offset : offset + 10] = b"garbage!!!"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptTarError, match=f"00010.tar: damaged tar header at byte {offset}"):
        list(iter_members(str(path)))


def test_one_zero_block_is_enough_to_end_a_tar(tmp_path):
    path = tmp_path / "00011.tar"
    name, offset, size = three_samples(path)[-1]
    path.write_bytes(path.read_bytes()[: offset + 512 + 512 + 512])
    assert [k for k, _ in iter_samples(str(path))] == ["00000", "00001", "00002"]
    assert sorted(index_samples(str(path))) == ["00000", "00001", "00002"]


def test_index_locates_every_member_of_a_pax_tar(tmp_path):
    path = tmp_path / "pax.tar"
    names = ["000000000.jpg", "000000000.json", "d" * 150 + "/000000001.jpg"]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            data = name.encode() * 3
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.pax_headers = {"comment": "x"}
            tar.addfile(info, io.BytesIO(data))
    index = index_samples(str(path))
    with open(path, "rb") as raw:
        assert {key: {ext: read_span(raw, span, str(path)) for ext, span in members.items()} for key, members in index.items()} == {
            "000000000": {"jpg": names[0].encode() * 3, "json": names[1].encode() * 3},
            "000000001": {"jpg": names[2].encode() * 3},
        }


def test_a_member_twice_in_one_tar_is_refused(tmp_path):
    path = tmp_path / "twice.tar"
    with tarfile.open(path, "w") as tar:
        for name in ("000000000.jpg", "000000001.jpg", "000000000.jpg"):
            info = tarfile.TarInfo(name)
            tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(CorruptTarError, match="twice.tar: member 000000000.jpg appears twice"):
        index_samples(str(path))
