"""verify-clean proves a cleaned copy holds no removed value, and lists the ones that remain."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from collections import Counter

import pytest

from laion_hf.clean import CleanOptions, clean_copy, verify_clean, verify_copy
from laion_hf.io.tar import iter_samples
from laion_hf.stages.removal import MissingPunsafeError
from tests.clean.test_cli import run_cli
from tests.formats import image_bytes


def test_a_cleaned_copy_verifies_clean(sample_copy, tmp_path):
    out = tmp_path / "out"
    clean_copy(str(sample_copy.download_dir), str(out), CleanOptions(remove=tuple(sample_copy.removal)), show_progress=False)
    result = verify_copy(str(out), sample_copy.removal)
    assert result.violations == []
    assert result.rows > 0 and result.samples > 0


def test_the_uncleaned_copy_lists_every_listed_value(sample_copy):
    violations = verify_clean(str(sample_copy.download_dir), sample_copy.removal)
    kinds = {v.kind for v in violations}
    assert {"url-sha256", "image-sha256", "laion-hash"} <= kinds
    assert all(v.file.endswith(".parquet") for v in violations)  # listed images are originals, not tar bytes
    assert any("key" in v.where for v in violations)


def test_tar_bytes_and_orphan_samples_are_checked(sample_copy, tmp_path):
    out = tmp_path / "out"
    clean_copy(str(sample_copy.download_dir), str(out), CleanOptions(), show_progress=False)
    key, members = next(iter_samples(str(out / "00000.tar")))
    stored = tmp_path / "stored.txt"
    stored.write_text(hashlib.md5(image_bytes(members)).hexdigest() + "\n")
    violations = verify_clean(str(out), [("image-md5", str(stored))])
    assert [(v.kind, v.where) for v in violations] == [("image-md5 (tar bytes)", f"key {key}")]

    shutil.copy(sample_copy.download_dir / "00001.tar", out / "00000.tar")  # samples the parquet does not describe
    orphans = [v for v in verify_clean(str(out), []) if v.kind == "orphan-sample"]
    assert orphans and all(v.file.endswith("00000.tar") for v in orphans)


def test_punsafe_and_keyword_rules_are_checked_too(sample_copy, tmp_path):
    lists_only = tmp_path / "lists-only"
    clean_copy(str(sample_copy.metadata_dir), str(lists_only), CleanOptions(remove=tuple(sample_copy.removal)), show_progress=False)
    assert verify_copy(str(lists_only), sample_copy.removal).violations == []  # lists alone: clean
    result = verify_copy(str(lists_only), sample_copy.removal, variant="research-safe", keyword_file=str(sample_copy.keyword_file))
    kinds = Counter(v.kind for v in result.violations)
    safe = tmp_path / "safe"
    report = clean_copy(str(sample_copy.metadata_dir), str(safe), CleanOptions(
        remove=tuple(sample_copy.removal), variant="research-safe", keyword_file=str(sample_copy.keyword_file)), show_progress=False)
    assert dict(kinds) == {"punsafe": report.by_reason["punsafe"], "keyword": report.by_reason["keyword"]}
    assert verify_copy(str(safe), sample_copy.removal, variant="research-safe", keyword_file=str(sample_copy.keyword_file)).violations == []


def test_a_download_is_checked_for_punsafe_through_its_metadata(sample_copy, tmp_path):
    out = tmp_path / "out"
    clean_copy(str(sample_copy.download_dir), str(out), CleanOptions(remove=tuple(sample_copy.removal)), show_progress=False)
    with pytest.raises(MissingPunsafeError, match=r"00000\.parquet: the variant needs a punsafe column"):
        verify_copy(str(out), sample_copy.removal, variant="research")  # refused, never passed unchecked
    flagged = verify_copy(str(out), sample_copy.removal, variant="research", metadata=str(sample_copy.metadata_dir)).violations
    assert flagged and {v.kind for v in flagged} == {"punsafe"}
    cleaned = tmp_path / "cleaned"
    clean_copy(str(sample_copy.download_dir), str(cleaned), CleanOptions(
        remove=tuple(sample_copy.removal), variant="research", metadata=str(sample_copy.metadata_dir)), show_progress=False)
    assert verify_copy(str(cleaned), sample_copy.removal, variant="research", metadata=str(sample_copy.metadata_dir)).violations == []


def test_a_sample_missing_from_its_tar_is_reported(sample_copy, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    clean_copy(str(sample_copy.download_dir), str(out), CleanOptions(), show_progress=False)
    tar = out / "00001.tar"
    with tarfile.open(tar) as source:
        members = [(m, source.extractfile(m).read()) for m in source.getmembers()]
    lost = members[0][0].name.split(".", 1)[0]
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as rewritten:  # a whole tar, one sample short
        for member, data in members:
            if not member.name.startswith(f"{lost}."):
                rewritten.addfile(member, io.BytesIO(data))
    missing = [v for v in verify_clean(str(out), []) if v.kind == "missing-sample"]
    assert [(v.file, v.where) for v in missing] == [(str(tar), f"key {lost}")]
    code, printed, _ = run_cli(monkeypatch, capsys, "verify-clean", out)
    assert code == 1 and f"{tar}: key" in printed and "missing-sample" in printed


@pytest.mark.parametrize("cut", ["member-boundary", "mid-member"])
def test_a_tar_cut_short_is_refused_naming_it(sample_copy, tmp_path, monkeypatch, capsys, cut):
    out = tmp_path / "out"
    clean_copy(str(sample_copy.download_dir), str(out), CleanOptions(), show_progress=False)
    tar = out / "00001.tar"
    data = tar.read_bytes()
    # At a member boundary tarfile itself reads on without an error; the end-of-archive check catches it.
    end = tarfile.open(tar).getmembers()[6].offset if cut == "member-boundary" else len(data) // 2 + 7
    tar.write_bytes(data[:end])
    code, _, err = run_cli(monkeypatch, capsys, "verify-clean", out)
    assert code == 2 and str(tar) in err and "Traceback" not in err
