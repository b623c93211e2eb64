"""Where work runs: :mod:`.local` (this machine) or :mod:`.ray` (a Ray cluster); :mod:`.base` is what they share."""

from __future__ import annotations

from laion_hf.core.errors import UserError
from laion_hf.runners.base import Runner

KINDS = ("local", "ray")


def make_runner(
    kind: str = "local",
    *,
    workers: int = 1,
    batch_size: int = 256,
    ray_address: str | None = None,
    gpus_per_model_actor: float = 0.0,
    show_progress: bool = True,
) -> Runner:
    """The runner a command asked for: ``local`` with ``workers`` processes, or ``ray`` with ``workers``
    actors per image pass (and as many CPUs when Ray is started here rather than joined at ``ray_address``)."""
    if kind == "local":
        from laion_hf.runners.local import LocalRunner

        return LocalRunner(workers=workers, batch_size=batch_size, show_progress=show_progress)
    if kind == "ray":
        from laion_hf.runners.ray import RayRunner

        return RayRunner(address=ray_address, num_cpus=None if ray_address else workers, concurrency=workers,
                         model_num_gpus=gpus_per_model_actor, batch_size=batch_size, show_progress=show_progress)
    raise UserError(f"--runner {kind!r}: one of {', '.join(KINDS)}")
