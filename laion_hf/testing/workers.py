"""A unit and a stage that record which worker process ran them, for the runners' worker-pool tests.

They live in the package (not in a test module) because a spawned worker imports a
unit's function or a stage's class by its module, and test modules (imported by path
under pytest's importlib mode) are not importable there.
"""

from __future__ import annotations

import os
import sys
import time
import weakref

import pyarrow as pa

from laion_hf.core.stage import Stage


def meet(rendezvous: str, workers: int, timeout: float = 120.0) -> None:
    """Check this process in at the folder ``rendezvous`` and wait until ``workers`` distinct processes have:
    a pass whose units all meet there is one in which every worker of a pool of ``workers`` ran a unit."""
    os.makedirs(rendezvous, exist_ok=True)
    open(os.path.join(rendezvous, str(os.getpid())), "w").close()
    deadline = time.monotonic() + timeout
    while len(os.listdir(rendezvous)) < workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(os.listdir(rendezvous))} of {workers} worker processes reached {rendezvous}")
        time.sleep(0.02)


def worker_record(unit: str, rendezvous: str, workers: int, variable: str) -> dict:
    """A unit's record, once every worker has met (:func:`meet`): the process that ran it, its value of the
    environment variable ``variable`` and the first entry of its ``sys.path``."""
    meet(rendezvous, workers)
    return {"unit": unit, "pid": os.getpid(), "variable": os.environ.get(variable), "path": sys.path[0]}


def _append(log: str, line: str) -> None:
    with open(log, "a") as f:
        f.write(line + "\n")


class RecordWorker(Stage):
    """Passes batches through and appends to ``log`` what the process holding it did: ``setup TAG PID``,
    ``call TAG PID`` per batch and ``release TAG PID`` when it let the set-up stage go. With ``rendezvous``, each
    batch waits there until ``workers`` processes have met (so every worker of the pool takes part)."""

    name = "record-worker"

    def __init__(self, log: str, tag: str, rendezvous: str | None = None, workers: int = 2) -> None:
        self.log, self.tag, self.rendezvous, self.workers = log, tag, rendezvous, workers

    def setup(self) -> None:
        _append(self.log, f"setup {self.tag} {os.getpid()}")
        weakref.finalize(self, _append, self.log, f"release {self.tag} {os.getpid()}")

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.rendezvous is not None:
            meet(self.rendezvous, self.workers)
        _append(self.log, f"call {self.tag} {os.getpid()}")
        return batch
