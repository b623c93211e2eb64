"""examples/train_stream.py runs end to end (loopback Hub, 2 workers, checkpoint, exact resume, webdataset)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_stream.py"


@pytest.mark.slow
@pytest.mark.parametrize("extra, expected", [([], "the same 32 samples followed"), (["--webdataset"], r"webdataset: \d+ samples from 4 shards")])
def test_train_example_demo(extra, expected):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--demo", "--image-size", "32", *extra], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(expected, result.stdout), result.stdout[-2000:]
