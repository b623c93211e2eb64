"""``laion-hf build``: a recipe, end to end, from WAT files to a Hub-ready folder with its card.

The recipe's ``steps`` are data (see :mod:`laion_hf.steps.registry`): each
step is planned from its spec before any work starts (a missing model or list
fails first), then run with one runner into ``OUTPUT/steps/<name>/``. Image
passes that share a CLIP run as one pass (``OUTPUT/steps/filter+score/``: the
images are read once and the score heads reuse the filter's embeddings).
After the last step, each config is an image pass into
``OUTPUT/steps/configs/<name>/`` (with exactly its rows' embeddings), and
``OUTPUT/hub`` gets the Hub layout and the card.

Every step folder gets a done marker (``.laion-hf/done/_step.json``) holding its
stats when complete; folders are named by step, so a re-run skips finished
steps by name (adding or removing a step does not renumber or redo the others)
and, inside an unfinished step, finished units (the runner's markers).
``OUTPUT/build_report.json`` has the resolved recipe, model checksums and the
per-stage table (in, kept, dropped by reason, seconds); the card is rendered
from it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from laion_hf.core.errors import UserError
from laion_hf.core.spec import resolve_file
from laion_hf.core.stage import StageStats
from laion_hf.io.atomic import join, mark_done, read_done, write_json
from laion_hf.io.samples import image_shards
from laion_hf.recipes import Recipe
from laion_hf.runners import make_runner
from laion_hf.runners.base import Runner
from laion_hf.steps.configs import config_pass
from laion_hf.steps.registry import STEPS, WAT, Context, Driver, ImagePass, Work, run_image_pass

STEPS_DIR = "steps"
CONFIGS = "configs"
PUBLISH = "publish"
HUB_DIR = "hub"
INDEX_DIR = "index"
REPORT_FILE = "build_report.json"
STEP_MARKER = "_step"


class BuildError(UserError):
    """A build cannot start or continue (bad inputs, a step missing its input)."""


@dataclass
class BuildOptions:
    """What ``laion-hf build`` was asked for, besides the recipe.

    ``start_at`` names the recipe step (or ``configs``) to start from, with
    ``inputs`` then being that step's input folder.
    """

    inputs: list[str]
    output: str
    runner: str = "local"
    workers: int = 1
    ray_address: str | None = None
    gpus_per_model_actor: float = 0.0
    start_at: str | None = None
    removals: tuple[tuple[str, str], ...] = ()
    allow_private_network: bool = False
    batch_size: int = 256
    hub_format: str = "webdataset"
    repo_id: str | None = None
    show_progress: bool = True


@dataclass
class BuildReport:
    """The result of a build: per-stage stats in pipeline order, per-config counts, where things are."""

    recipe: dict[str, Any]
    stages: list[StageStats] = field(default_factory=list)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    hub_folder: str | None = None
    card: str | None = None
    runner: str = "local"
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)  # wall time of each step when it ran

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "stages": [s.to_dict() for s in self.stages],
            "step_seconds": {k: round(v, 3) for k, v in self.step_seconds.items()},
            "configs": self.configs,
            "models": self.models,
            "hub_folder": self.hub_folder,
            "card": self.card,
            "runner": self.runner,
            "seconds": round(self.seconds, 3),
        }


def weights_sha256(path: str) -> str:
    """sha256 of a weights file; of a weights folder, the sha256 of its files' (name, sha256) list."""
    target = Path(path)
    if target.is_dir():
        listing = "".join(f"{p.relative_to(target)}\0{weights_sha256(str(p))}\n" for p in sorted(target.rglob("*")) if p.is_file())
        return hashlib.sha256(listing.encode("utf-8")).hexdigest()
    digest = hashlib.sha256()
    with open(target, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_records(recipe: Recipe) -> list[dict[str, Any]]:
    """Name, weights and sha256 of every model the recipe names (checksums of the local files used).

    A pretrained *tag* (``openai``) has no local file until open_clip fetches
    it; the card then says so rather than inventing a checksum.
    """
    records = []
    for ref, spec in recipe.models.items():
        weights = spec.path or spec.pretrained
        local = resolve_file(weights, recipe.path) if weights else None
        found = local is not None and Path(local).exists()
        records.append(
            {
                "name": f"{ref}: {spec.name}",
                "source": weights or "-",
                "sha256": weights_sha256(local) if found else "not a local file (tag or missing)",
            }
        )
    return records


@dataclass
class Group:
    """Steps that run as one unit of the pipeline: a driver, or adjacent image passes fused into one read."""

    names: list[str]
    work: list[Work]

    @property
    def folder(self) -> str:
        return "+".join(self.names)


def plan_groups(names: Sequence[str], works: Sequence[Work]) -> list[Group]:
    """Adjacent image passes with the same ``fuse`` key share one group; everything else is its own."""
    groups: list[Group] = []
    for name, work in zip(names, works):
        last = groups[-1] if groups else None
        if (isinstance(work, ImagePass) and work.fuse is not None and last is not None
                and isinstance(last.work[-1], ImagePass) and last.work[-1].fuse == work.fuse):
            last.names.append(name)
            last.work.append(work)
        else:
            groups.append(Group([name], [work]))
    return groups


class Build:
    """Run a recipe's steps in order with one runner, each resumable, collecting the stats of every stage."""

    def __init__(self, recipe: Recipe, options: BuildOptions, runner: Runner | None = None) -> None:
        names = list(recipe.steps)
        if options.start_at is not None:
            if options.start_at not in (*names, CONFIGS):
                raise BuildError(f"--start-at {options.start_at!r}: recipe {recipe.name} has steps {', '.join(names)} (or {CONFIGS})")
            names = [] if options.start_at == CONFIGS else names[names.index(options.start_at):]
        self.recipe = recipe
        self.options = options
        context = Context(models=recipe.models, recipe_path=recipe.path,
                          options={"allow_private_network": options.allow_private_network, "batch_size": options.batch_size})
        # Every step is planned now: a missing model or list fails before any work.
        self.groups = plan_groups(names, [STEPS[name].plan(recipe.steps[name], context) for name in names])
        self.configs = {config.name: config for config in recipe.configs}
        self.runner = runner or make_runner(
            options.runner, workers=options.workers, batch_size=options.batch_size, ray_address=options.ray_address,
            gpus_per_model_actor=options.gpus_per_model_actor, show_progress=options.show_progress,
        )
        self.report = BuildReport(recipe=recipe.to_dict(), runner=options.runner)

    def step_dir(self, *parts: str) -> str:
        return join(self.options.output, STEPS_DIR, *parts)

    def _step(self, name: str, directory: str, run) -> dict[str, Any]:
        """Run one step into ``directory`` unless its done marker exists; record its stats."""
        recorded = read_done(directory, STEP_MARKER)
        if recorded is None:
            started = time.perf_counter()
            stats = run(directory)
            for s in stats:
                s.check()
            recorded = {"step": name, "stats": [s.to_dict() for s in stats], "seconds": time.perf_counter() - started}
            mark_done(directory, STEP_MARKER, recorded)
        self.report.stages.extend(StageStats.from_dict(d) for d in recorded["stats"])
        self.report.step_seconds[name] = recorded["seconds"]
        return recorded

    def _run_group(self, group: Group, source: Any, directory: str) -> list[StageStats]:
        if isinstance(group.work[0], Driver):
            inputs = source if STEPS[group.names[0]].reads == WAT else self._single_input(source)  # WAT files: many
            return group.work[0].run(inputs, directory, self.runner)
        return run_image_pass(self.runner, group.work, self._single_input(source), directory, description=group.folder)

    def run(self) -> BuildReport:
        started = time.perf_counter()
        source: Any = self.options.inputs
        embeddings: str | None = None
        for group in self.groups:
            directory = self.step_dir(group.folder)
            self._step(group.folder, directory, lambda d, g=group, s=source: self._run_group(g, s, d))
            if any(isinstance(w, ImagePass) and w.sidecar is not None for w in group.work):
                embeddings = directory  # the pass that wrote the embeddings the configs carry along
            source = directory
        source_dir = self._single_input(source)
        config_dirs = {}
        for name, config in self.configs.items():
            directory = self.step_dir(CONFIGS, name)
            work = config_pass(config, self.options.removals, embeddings)
            self._step(f"{CONFIGS}/{name}", directory, lambda d, w=work: run_image_pass(self.runner, [w], source_dir, d, description=name))
            config_dirs[name] = directory
            self.report.configs[name] = {"rows": count_rows(directory), "dir": directory}
        self.report.models = model_records(self.recipe)
        self._publish(config_dirs)
        self.report.seconds = time.perf_counter() - started
        for folder in (self.options.output, self.report.hub_folder):
            write_json(join(folder, REPORT_FILE), self.report.to_dict())
        return self.report

    def _single_input(self, source: Any) -> str:
        if isinstance(source, str):
            return source
        if len(source) != 1:
            raise BuildError(f"this step reads one folder, got {len(source)} inputs")
        return source[0]

    def _publish(self, config_dirs: dict[str, str]) -> None:
        folder = join(self.options.output, HUB_DIR)
        directory = self.step_dir(PUBLISH)
        recorded = read_done(directory, STEP_MARKER)
        if recorded is None:
            started = time.perf_counter()
            indices = build_indices(config_dirs, self.step_dir(INDEX_DIR))
            card = publish(self.recipe, self.report, config_dirs, folder, self.options, indices)
            recorded = {"step": PUBLISH, "folder": folder, "card": card, "seconds": time.perf_counter() - started}
            mark_done(directory, STEP_MARKER, recorded)
        self.report.step_seconds[PUBLISH] = recorded["seconds"]
        self.report.hub_folder = recorded["folder"]
        self.report.card = recorded["card"]


def count_rows(directory: str) -> int:
    """Samples in a directory of image shards (from the parquet footers)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(s.parquet).metadata.num_rows for s in image_shards(directory))


def removal_list_records(recipe: Recipe, extra: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Every removal list a config applied: kind, file, valid values, sha256 (the card's provenance table)."""
    from laion_hf.io.removal_lists import load_list

    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for config in recipe.configs:
        for kind, path in [(r.kind, r.file) for r in config.remove] + list(extra):
            if (kind, path) not in seen:
                seen[kind, path] = {
                    "kind": kind,
                    "path": Path(path).name,
                    "values": len(load_list(kind, path).values),
                    "sha256": weights_sha256(path),
                }
    return list(seen.values())


def card_context(recipe: Recipe, options: BuildOptions) -> dict[str, Any]:
    """What the card gets beyond what the build report shows (steps, thresholds, models): the lists' checksums."""
    return {
        "removal_lists": removal_list_records(recipe, options.removals),
        "repo_id": options.repo_id,
        "known_issues": [
            f"Models and thresholds are the recipe's ({Path(recipe.path).name}); build_report.json in this repo has "
            "the resolved recipe and every stage's counts.",
        ],
    }


def build_indices(config_dirs: dict[str, str], folder: str) -> dict[str, tuple[str, Any]]:
    """A kNN index of every config that has embeddings, in ``folder/<config>``: config -> (folder, IndexInfo)."""
    from laion_hf.search.index import build_index
    from laion_hf.search.source import is_embedding_folder

    indices = {}
    for name, directory in config_dirs.items():
        if is_embedding_folder(Path(directory)):
            target = join(folder, name)
            indices[name] = (target, build_index(directory, target, config=name))
    return indices


def search_section(indices: dict[str, tuple[str, Any]], repo_id: str | None) -> str:
    """The card's Search section: where each config's index is, its model, and its measured recall."""
    if not indices:
        return ""
    rows = ["| config | rows | model | index | recall@10 vs exact search |", "| --- | ---: | --- | --- | ---: |"]
    for name, (_, info) in indices.items():
        image = info.indices["image"]
        rows.append(f"| {name} | {info.rows:,} | {info.model['name']} | `{INDEX_DIR}/{name}/` ({image.factory}) | "
                    f"{image.recall_at_10:.3f} |")
    repo = repo_id or "ORG/NAME"
    example = next(iter(indices))
    return (
        "A kNN index of each config's CLIP image and text embeddings is in this repo, aligned row for row with the "
        "config (rows a config removed are not in its index). Queries are embedded with the model that computed "
        "the embeddings:\n\n" + "\n".join(rows) + "\n\n```bash\n"
        f'laion-hf search hf://datasets/{repo}/{INDEX_DIR}/{example} "a red circle on a white background"\n'
        f"laion-hf serve hf://datasets/{repo}/{INDEX_DIR}/{example}   # a search page on http://127.0.0.1:8080\n```"
    )


def publish(recipe: Recipe, report: BuildReport, config_dirs: dict[str, str], folder: str, options: BuildOptions,
            indices: dict[str, tuple[str, Any]] | None = None) -> str:
    """Lay out the configs for the Hub in ``folder`` with plots, the card and the configs' indices (``index/``).

    The card's claims come from this build's report (as ``build_report.json``
    will hold it, with the removal lists given on the command line).
    """
    import shutil

    from laion_hf.hub.publish import publish_folder

    evidence = {**report.to_dict(), "removals": [list(removal) for removal in options.removals]}
    publish_folder(
        config_dirs,
        folder,
        family=recipe.card,
        context={**card_context(recipe, options), "search_md": search_section(indices or {}, options.repo_id)},
        reports={name: {REPORT_FILE: evidence} for name in config_dirs},
        format=options.hub_format,
        default=recipe.default_config.name,
    )
    for name, (directory, _) in (indices or {}).items():
        shutil.copytree(directory, join(folder, INDEX_DIR, name), dirs_exist_ok=True)
    return join(folder, "README.md")
