"""A stage that crashes its worker process once: a real ``SIGKILL`` for the runners' crash tests.

It lives in the package (not in a test module) because Ray workers import a
stage's class by its module, and only the installed package is importable there.
"""

from __future__ import annotations

import os
import signal

import pyarrow as pa

from laion_hf.core.stage import Stage


class CrashOnce(Stage):
    """Passes batches through; the first time it meets ``key`` (no ``marker`` file yet) it kills its own process."""

    name = "crash-once"

    def __init__(self, marker: str, key: str) -> None:
        self.marker = marker
        self.key = key

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.key in batch["key"].cast(pa.string()).to_pylist() and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return batch
