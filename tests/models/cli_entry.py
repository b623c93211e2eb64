"""``laion-hf ARGS`` through the real entry point inside the test process (exit code included)."""

from __future__ import annotations

import sys

import pytest


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Exit code, stdout and stderr, each with rich's line wrapping undone (whitespace runs -> one space)."""
    from laion_hf.cli import main

    monkeypatch.setattr(sys, "argv", ["laion-hf", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit) as exited:
        main()
    out = capsys.readouterr()
    return exited.value.code or 0, " ".join(out.out.split()), " ".join(out.err.split())
