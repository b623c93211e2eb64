"""``laion-hf extract`` from the command line: tables and stats on success, one clear line on bad input."""

from __future__ import annotations

import os
import sys

import pytest
from typer.testing import CliRunner

from laion_hf.cli import app, main
from tests.extract.wat_cases import RULE_PAIRS, write_damaged_wat, write_rule_wat


def test_extract_command_prints_counts_and_writes_shards(tmp_path):
    write_rule_wat(str(tmp_path / "rules.warc.wat.gz"))
    write_damaged_wat(str(tmp_path / "damaged.warc.wat.gz"))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["extract", str(tmp_path / "*.warc.wat.gz"), str(out), "--no-language"])
    assert result.exit_code == 0, result.output
    assert "duplicate_in_file=1" in result.output
    assert "corrupt_gzip" in result.output and "invalid_utf8" in result.output
    assert f"{len(RULE_PAIRS) + 5:,} pairs kept in 2 shards" in result.output
    assert sorted(p for p in os.listdir(out) if p.endswith(".parquet")) == ["damaged.warc.wat.parquet", "rules.warc.wat.parquet"]


def test_missing_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "gone.warc.wat.gz"
    monkeypatch.setattr(sys, "argv", ["laion-hf", "extract", str(missing), str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert "gone.warc.wat.gz" in stderr and "Traceback" not in stderr
