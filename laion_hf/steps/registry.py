"""The step registry: every pipeline step by name, what it reads and writes, how its spec is parsed and run.

A recipe's ``steps:`` mapping is data: its keys are step names from
:data:`STEPS`, in the order they run, each with its spec. The pipeline checks
that each step reads what the one before it writes, parses each spec with the
step's parser (errors name file, line and key), and asks the step for its
:class:`Work`: either an :class:`ImagePass` (a list of stages over image
shards, which a runner's ``map_stages`` runs and which adjacent passes share)
or a :class:`Driver` (a function of the input folder, the output folder and a
runner, for steps with their own units: extract, download, dedup).

Adding a step = a module with a ``work(spec, context)`` function, a spec parser
in :mod:`laion_hf.steps.specs`, and one :class:`Step` line in :data:`STEPS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from laion_hf.core.spec import SpecReader
from laion_hf.core.stage import Stage, StageStats
from laion_hf.io.samples import SidecarFactory, image_shards
from laion_hf.runners.base import Runner, stage_totals
from laion_hf.steps import specs

WAT = "WAT files"
CANDIDATES = "candidate parquet files"
IMAGES = "image shards"


@dataclass
class ImagePass:
    """Stages over every image shard (one ``map_stages``); ``fuse`` names passes it may share a read with."""

    stages: list[Stage]
    sidecar: SidecarFactory | None = None
    uses_model: bool = False
    fuse: str | None = None  # passes with the same non-None value, one after the other, run as one pass
    after: Callable[[str], None] | None = None  # called with the output folder once every shard is done


@dataclass
class Driver:
    """A step with its own units: ``run(input, output_dir, runner)`` returns the step's stats."""

    run: Callable[[Any, str, Runner], list[StageStats]]


Work = ImagePass | Driver


@dataclass
class Context:
    """What a step may need besides its spec to plan its work: the recipe's models and the run's options."""

    models: Mapping[str, specs.ModelSpec] = field(default_factory=dict)
    recipe_path: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """A registered step. ``work`` is ``"module:function"``, imported only when the step runs."""

    name: str
    reads: str
    writes: str
    parse: Callable[[SpecReader, Any, Mapping[str, specs.ModelSpec], str], Any]
    work: str

    def plan(self, spec: Any, context: Context) -> Work:
        module, _, function = self.work.partition(":")
        return getattr(import_module(module), function)(spec, context)


def _options(module: str):
    """Parser of a step whose spec is keyword options of a library function (``module.recipe_options()`` names them)."""

    def parse(r: SpecReader, value: Any, models: Mapping[str, specs.ModelSpec], key: str) -> dict[str, Any]:
        return specs.parse_options(r, value, key, import_module(module).recipe_options())

    return parse


STEPS: dict[str, Step] = {
    step.name: step
    for step in (
        Step("extract", WAT, CANDIDATES, _options("laion_hf.steps.extract"), "laion_hf.steps.extract:work"),
        Step("download", CANDIDATES, IMAGES, _options("laion_hf.steps.download"), "laion_hf.steps.download:work"),
        Step("filter", IMAGES, IMAGES, specs.parse_filter, "laion_hf.steps.filter:work"),
        Step("score", IMAGES, IMAGES, specs.parse_score, "laion_hf.steps.score:work"),
        Step("dedup", IMAGES, IMAGES, specs.parse_dedup, "laion_hf.steps.dedup:work"),
    )
}


def run_image_pass(
    runner: Runner, passes: Sequence[ImagePass], source: str, output_dir: str, description: str | None = None
) -> list[StageStats]:
    """One read of every shard of ``source`` through the stages of ``passes`` (fused) into ``output_dir``."""
    stages = [stage for work in passes for stage in work.stages]
    sidecars = [work.sidecar for work in passes if work.sidecar is not None]
    if len(sidecars) > 1:
        raise ValueError("a fused pass takes at most one sidecar")
    records = runner.map_stages(
        image_shards(source), stages, output_dir, sidecar=sidecars[0] if sidecars else None,
        uses_model=any(work.uses_model for work in passes), description=description,
    )
    for work in passes:
        if work.after is not None:
            work.after(output_dir)
    return stage_totals(records, [stage.name for stage in stages])
