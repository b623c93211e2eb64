"""Run ``laion-hf`` through its real entry point in this process: exit code and everything it printed."""

from __future__ import annotations

import sys

import pytest

from laion_hf.cli import main


def run_entry_point(monkeypatch, capsys, *args) -> tuple[int, str]:
    """``laion-hf ARGS`` as a user runs it (``main()``: errors become exit codes); returns (code, stdout + stderr)."""
    monkeypatch.setattr(sys, "argv", ["laion-hf", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return exited.value.code or 0, captured.out + captured.err
