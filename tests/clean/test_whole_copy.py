"""Cleaning the whole copy: the download, and the LAION metadata it came from, in one run.

The image-hash lists are the CSAM lists: a metadata row whose image one of them
removed from the download must go from the cleaned metadata too (matched by the
LAION hash of (url, caption)), or the metadata keeps pointing at that image.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter

import datasets
import pyarrow.parquet as pq
import pytest

from laion_hf.clean import CleanOptions, clean_copy
from laion_hf.core.errors import UserError
from laion_hf.core.hashing import laion_hash
from tests.clean.test_clean import THRESHOLDS, listed, read_dir, reason_for


def whole(copy, out_meta, variant="research-safe", **extra) -> CleanOptions:
    return CleanOptions(remove=tuple(copy.removal), variant=variant, keyword_file=str(copy.keyword_file),
                        metadata=str(copy.metadata_dir), metadata_output=str(out_meta), **extra)


def expected_metadata(copy, variant) -> tuple[list[dict], Counter]:
    """An independent reading: link lists, the image list through the download's sidecar sha256, punsafe, keywords."""
    lists = listed(copy)
    image_listed = {
        laion_hash(r["url"], r["caption"])
        for r in read_dir(copy.download_dir, "*.parquet").to_pylist()
        if r["sha256"] is not None and r["sha256"] in lists["image"]
    }
    kept, reasons = [], Counter()
    for row in read_dir(copy.metadata_dir, "part-*.parquet").to_pylist():
        reason = reason_for(row["URL"], row["TEXT"], row["punsafe"], THRESHOLDS[variant], lists)
        if reason in (None, "punsafe", "keyword") and row["hash"] in image_listed:
            reason = "image-sha256"  # the lists come first, as in the stage
        if reason is None:
            kept.append(row)
        else:
            reasons[reason] += 1
    return kept, reasons


@pytest.mark.parametrize("variant", ["research", "research-safe"])
def test_metadata_loses_the_rows_whose_image_a_list_removed(sample_copy, tmp_path, variant):
    out, out_meta = tmp_path / "download", tmp_path / "metadata"
    report = clean_copy(str(sample_copy.download_dir), str(out), whole(sample_copy, out_meta, variant), workers=2,
                        show_progress=False)
    kept, reasons = expected_metadata(sample_copy, variant)
    assert read_dir(out_meta, "part-*.parquet").to_pylist() == kept
    assert dict(report.metadata.by_reason) == dict(reasons)
    assert reasons["image-sha256"] > 0 and set(reasons) == {"url-sha256", "laion-hash", "image-sha256", "punsafe", "keyword"}
    meta_total = report.metadata.total
    assert meta_total.rows_in == meta_total.kept + meta_total.removed == sum(
        pq.read_metadata(p).num_rows for p in sample_copy.metadata_dir.glob("part-*.parquet"))
    # Every download row an image list removed is gone from the metadata too.
    kept_hashes = {r["hash"] for r in kept}
    removed_by_image = [r for r in read_dir(sample_copy.download_dir, "*.parquet").to_pylist()
                        if r["sha256"] in listed(sample_copy)["image"]]
    assert removed_by_image and not {laion_hash(r["url"], r["caption"]) for r in removed_by_image} & kept_hashes
    # The download's report says where the metadata went and its counts; both reports add up.
    saved = __import__("json").loads((out / "clean_report.json").read_text())
    assert saved["metadata"]["output"] == str(out_meta) and saved["metadata"]["by_reason"] == dict(sorted(reasons.items()))
    assert (out_meta / "clean_report.json").exists()
    assert len(datasets.load_dataset(str(out_meta), split="train", cache_dir=str(tmp_path / "hf"))) == len(kept)


def test_a_run_stopped_after_the_download_resumes_to_the_same_metadata(sample_copy, tmp_path):
    reference = clean_copy(str(sample_copy.download_dir), str(tmp_path / "ref"), whole(sample_copy, tmp_path / "ref-meta"),
                           show_progress=False)
    out, out_meta = tmp_path / "download", tmp_path / "metadata"
    options = whole(sample_copy, out_meta)
    clean_copy(str(sample_copy.download_dir), str(out), options, show_progress=False)
    shutil.rmtree(out_meta)  # as if killed before the metadata part ...
    (out / ".laion-hf" / "done" / "00001.json").unlink()  # ... and before one download shard's marker
    resumed = clean_copy(str(sample_copy.download_dir), str(out), options, show_progress=False)
    assert resumed.metadata.by_reason == reference.metadata.by_reason
    for part in sample_copy.metadata_dir.glob("part-*.parquet"):
        assert (out_meta / part.name).read_bytes() == (tmp_path / "ref-meta" / part.name).read_bytes()


def test_metadata_output_needs_metadata_and_its_own_place(sample_copy, tmp_path):
    with pytest.raises(UserError, match="--metadata-output needs --metadata"):
        clean_copy(str(sample_copy.download_dir), str(tmp_path / "o"), CleanOptions(metadata_output=str(tmp_path / "m")),
                   show_progress=False)
    with pytest.raises(UserError, match="--metadata-output must differ"):
        clean_copy(str(sample_copy.download_dir), str(tmp_path / "o"), whole(sample_copy, sample_copy.metadata_dir),
                   show_progress=False)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_cli_cleans_the_whole_copy_and_both_halves_verify(sample_copy, tmp_path):
    out, out_meta = tmp_path / "download", tmp_path / "metadata"
    removes = [arg for kind, path in sample_copy.removal for arg in ("--remove", f"{kind}={path}")]
    command = [sys.executable, "-c", "from laion_hf.cli import main; main()"]
    result = subprocess.run(
        [*command, "clean", sample_copy.download_dir, out, *removes, "--variant", "research-safe",
         "--metadata", sample_copy.metadata_dir, "--metadata-output", out_meta, "--keyword-file", sample_copy.keyword_file],
        capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "clean metadata: per shard" in result.stdout and f"{out_meta}/clean_report.json" in result.stdout.replace("\n", "")
    for folder, punsafe_from in ((out, ["--metadata", sample_copy.metadata_dir]), (out_meta, [])):
        verified = subprocess.run([*command, "verify-clean", folder, *removes, "--variant", "research-safe",
                                   "--keyword-file", sample_copy.keyword_file, *punsafe_from], capture_output=True, text=True)
        assert verified.returncode == 0, verified.stdout + verified.stderr
