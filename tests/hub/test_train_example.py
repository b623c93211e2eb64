"""examples/train_stream.py runs end to end: loopback Hub, 2 workers, checkpoint, exact resume.

(The example's webdataset path reads the same shard URLs that test_load checks with the webdataset library.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_stream.py"


@pytest.mark.slow
def test_train_example_demo_resumes_exactly():
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--demo", "--image-size", "32"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "checkpoint at step 2" in result.stdout
    assert "the same 32 samples followed" in result.stdout


@pytest.mark.slow
def test_train_example_webdataset_reads_every_format():
    """The demo copy's shards mix .jpg, .png and .webp samples, as LAION shards do."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--demo", "--webdataset", "--image-size", "32"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "webdataset: 136 samples from 4 shards" in result.stdout
