"""rewrite_tar copies kept members as raw spans: byte-identical headers (PAX, long names) and data."""

from __future__ import annotations

import io
import tarfile

import pytest

from laion_hf.io.tar import CorruptTarError, rewrite_tar, write_samples


def pax_tar(path, names):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            data = name.encode() * 300
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.uname = len(data), 1_700_000_000, "crawler"
            info.pax_headers = {"comment": "from img2dataset"}
            tar.addfile(info, io.BytesIO(data))


def test_keeping_everything_reproduces_the_file_exactly(tmp_path):
    src, dst = tmp_path / "a.tar", tmp_path / "b.tar"
    pax_tar(src, ["000000000.jpg", "000000000.json", "d" * 150 + "/000000001.jpg"])
    result = rewrite_tar(str(src), str(dst), keep=lambda key: True)
    assert result.kept == ["000000000", "000000001"]
    assert dst.read_bytes() == src.read_bytes()


def test_removed_members_are_cut_and_kept_spans_are_unchanged(tmp_path):
    src, dst = tmp_path / "a.tar", tmp_path / "b.tar"
    pax_tar(src, ["000000000.jpg", "x" * 120 + "/000000001.jpg", "000000002.jpg"])
    rewrite_tar(str(src), str(dst), keep=lambda key: key != "000000000")
    with tarfile.open(src) as tar:
        members = tar.getmembers()
    raw = src.read_bytes()
    kept_spans = b"".join(raw[m.offset : m.offset_data + -(-m.size // 512) * 512] for m in members[1:])
    assert dst.read_bytes().startswith(kept_spans)
    with tarfile.open(dst) as tar:
        assert [m.name for m in tar.getmembers()] == [m.name for m in members[1:]]
        assert tar.getmembers()[0].pax_headers["comment"] == "from img2dataset"


def test_tar_cut_at_a_member_boundary_is_detected(tmp_path):
    src = tmp_path / "00003.tar"
    write_samples(str(src), [(f"00003000{i}", {"jpg": b"x" * 512}) for i in range(3)])
    src.write_bytes(src.read_bytes()[: 2 * 1024])  # two whole members, no end-of-archive marker
    with pytest.raises(CorruptTarError, match=r"00003\.tar: truncated: no end-of-archive marker"):
        rewrite_tar(str(src), str(tmp_path / "out.tar"), keep=lambda key: True)
    assert not (tmp_path / "out.tar").exists()


def test_tar_cut_inside_member_data_is_detected(tmp_path):
    src = tmp_path / "00004.tar"
    write_samples(str(src), [("000040000", {"jpg": b"x" * 5000})])
    src.write_bytes(src.read_bytes()[:3000])
    with pytest.raises(CorruptTarError, match=r"00004\.tar"):
        rewrite_tar(str(src), str(tmp_path / "out.tar"), keep=lambda key: True)
    assert list(tmp_path.iterdir()) == [src]
