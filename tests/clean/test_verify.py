"""verify-clean proves a cleaned copy holds no removed value, and lists the ones that remain."""

from __future__ import annotations

import hashlib
import shutil

from laion_hf.clean import CleanOptions, clean_copy, verify_clean, verify_copy
from laion_hf.io.tar import iter_samples
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
