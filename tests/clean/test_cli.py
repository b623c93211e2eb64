"""The `clean` / `verify-clean` commands as a user runs them: exit codes, one-line errors, the report table."""

from __future__ import annotations

import subprocess
import sys


def laion_hf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from laion_hf.cli import main; main()", *map(str, args)],
        capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""},
    )


def test_clean_then_verify_clean(sample_copy, tmp_path):
    out = tmp_path / "out"
    removes = [arg for kind, path in sample_copy.removal for arg in ("--remove", f"{kind}={path}")]
    result = laion_hf("clean", sample_copy.download_dir, out, *removes, "--variant", "research-safe",
                      "--metadata", sample_copy.metadata_dir, "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "removed by reason" in result.stdout and "image-sha256" in result.stdout
    assert "sidecar column sha256" in result.stdout
    assert f"{out}/clean_report.json" in result.stdout.replace("\n", "")

    verified = laion_hf("verify-clean", out, *removes)
    assert verified.returncode == 0, verified.stdout
    assert "no removed value remains" in verified.stdout

    dirty = laion_hf("verify-clean", sample_copy.download_dir, *removes)
    assert dirty.returncode == 1
    assert "removed value(s) remain" in dirty.stdout and "00000.parquet: row" in dirty.stdout


def test_bad_list_is_one_line_error_with_exit_2(sample_copy, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("xyz\n")
    result = laion_hf("clean", sample_copy.metadata_dir, tmp_path / "out", "--remove", f"url-md5={bad}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}: line 1: 'xyz' is not a valid url-md5 value" in result.stderr.replace("\n", "")
    assert not (tmp_path / "out").exists()


def test_skip_invalid_counts_and_reports(sample_copy, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("xyz\n" + "0" * 32 + "\n")
    result = laion_hf("clean", sample_copy.metadata_dir, tmp_path / "out", "--remove", f"url-md5={bad}", "--skip-invalid")
    assert result.returncode == 0, result.stderr
    assert "skipped 1 invalid url-md5 value(s)" in result.stdout.replace("\n", "")


def test_unknown_kind_is_rejected(sample_copy, tmp_path):
    result = laion_hf("clean", sample_copy.metadata_dir, tmp_path / "out", "--remove", "url-sha1=x.txt")
    assert result.returncode == 2 and "unknown kind 'url-sha1'" in result.stderr
