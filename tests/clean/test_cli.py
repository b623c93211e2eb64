"""The `clean` / `verify-clean` commands as a user runs them: exit codes, one-line errors, the report table."""

from __future__ import annotations

import subprocess
import sys

import pytest

from laion_hf.cli import main


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """``laion-hf ARGS`` in this process (the entry point itself, exit code included)."""
    monkeypatch.setattr(sys, "argv", ["laion-hf", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return exited.value.code or 0, captured.out.replace("\n", ""), captured.err.replace("\n", "")


def removes(copy) -> list[str]:
    return [arg for kind, path in copy.removal for arg in ("--remove", f"{kind}={path}")]


@pytest.mark.slow
def test_clean_then_verify_clean_as_a_real_process(sample_copy, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-c", "from laion_hf.cli import main; main()"]
    result = subprocess.run(
        [*command, "clean", sample_copy.download_dir, out, *removes(sample_copy), "--variant", "research-safe",
         "--metadata", sample_copy.metadata_dir, "--workers", "2"],
        capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "removed by reason" in result.stdout and "image-sha256" in result.stdout
    assert "sidecar column sha256" in result.stdout
    assert f"{out}/clean_report.json" in result.stdout.replace("\n", "")
    verified = subprocess.run([*command, "verify-clean", out, *removes(sample_copy)], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout
    assert "no removed value remains" in verified.stdout


def test_verify_clean_lists_what_remains_and_exits_1(sample_copy, monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "verify-clean", sample_copy.download_dir, *removes(sample_copy))
    assert code == 1
    assert "removed value(s) or missing sample(s) in" in out and "00000.parquet: row" in out


def test_bad_list_is_one_line_error_with_exit_2(sample_copy, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("xyz\n")
    code, _, err = run_cli(monkeypatch, capsys, "clean", sample_copy.metadata_dir, tmp_path / "out", "--remove", f"url-md5={bad}")
    assert code == 2
    assert "Traceback" not in err
    assert f"{bad}: line 1: 'xyz' is not a valid url-md5 value" in err
    assert not (tmp_path / "out").exists()


def test_skip_invalid_counts_and_reports(sample_copy, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("xyz\n" + "0" * 32 + "\n")
    code, out, _ = run_cli(monkeypatch, capsys, "clean", sample_copy.metadata_dir, tmp_path / "out",
                           "--remove", f"url-md5={bad}", "--skip-invalid")
    assert code == 0
    assert "skipped 1 invalid url-md5 value(s)" in out
    assert "rows in = kept + removed: checked" in out


def test_unknown_kind_is_rejected(sample_copy, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "clean", sample_copy.metadata_dir, tmp_path / "out", "--remove", "url-sha1=x.txt")
    assert code == 2 and "unknown kind 'url-sha1'" in err
