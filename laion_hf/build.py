"""``laion-hf build``: a recipe, end to end, from WAT files to a Hub-ready folder with its card.

The pipeline is a fixed sequence of *steps*; a recipe says which run and how::

    01-extract  WAT files -> candidate parquet            (laion_hf.extract)
    02-download candidates -> img2dataset image shards     (laion_hf.steps.download)
    03-filter   CLIP similarity >= threshold, languages   (laion_hf.stages.filter)
    04-score    punsafe / pwatermark / aesthetic columns   (laion_hf.stages.score)
    05-dedup    exact LAION hash (+ near duplicates)       (laion_hf.stages.dedup)
    06-configs/<name>  removal lists, punsafe limit, keywords, language subset
    07-publish  OUTPUT/hub: Hub layout + card with the recipe, models and counts

Every step writes under ``OUTPUT/stages/<nn>-<step>/`` and, when complete, a
step-level done marker (``_stage.done.json``) holding its stats: a re-run
skips finished steps and, inside an unfinished image step, finished shards
(the runner's per-shard markers). ``OUTPUT/build_report.json`` has the
resolved recipe, model checksums and the per-stage table (in, kept, dropped
by reason, seconds); the card is rendered from it.

Runners only schedule: image steps hand a list of Stage objects to the local
runner (this process or a process pool) or to :class:`laion_hf.runners.ray.RayRunner`.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from laion_hf.core.errors import UserError
from laion_hf.core.stage import Stage, StageStats
from laion_hf.io.atomic import join, mark_done, read_done, write_json
from laion_hf.io.removal_lists import load_removal_sets
from laion_hf.io.samples import SidecarFactory, image_shards
from laion_hf.recipes import ConfigSpec, Recipe
from laion_hf.runners.base import Runner, stage_totals
from laion_hf.runners.local import LocalRunner
from laion_hf.stages.language import LanguageStage
from laion_hf.stages.removal import RemovalStage, keyword_pattern, load_keywords
from laion_hf.stages.score import NsfwTagStage

STAGES_DIR = "stages"
HUB_DIR = "hub"
REPORT_FILE = "build_report.json"
STEP_MARKER = "_stage"
STEPS = ("extract", "download", "filter", "score", "dedup", "configs", "publish")


class BuildError(UserError):
    """A build cannot start or continue (bad inputs, a step missing its input)."""


# ---------------------------------------------------------------- options and report


@dataclass
class BuildOptions:
    """What ``laion-hf build`` was asked for, besides the recipe."""

    inputs: list[str]
    output: str
    runner: str = "local"
    workers: int = 1
    ray_address: str | None = None
    gpus_per_model_actor: float = 0.0
    start_at: str = "extract"
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
    from laion_hf.recipes.recipe import resolve_file

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


# ---------------------------------------------------------------- the pipeline


class Build:
    """Run a recipe's steps in order, each resumable, collecting the stats of every stage."""

    def __init__(self, recipe: Recipe, options: BuildOptions, runner: Runner | None = None) -> None:
        if options.start_at not in STEPS[:6]:
            raise BuildError(f"--start-at {options.start_at!r}: one of {', '.join(STEPS[:6])}")
        if options.start_at not in ("extract", "configs") and options.start_at not in recipe.stages:
            raise BuildError(f"--start-at {options.start_at}: recipe {recipe.name} has no {options.start_at} stage")
        check_stage_options(recipe)
        self.recipe = recipe
        self.options = options
        self.order = self._plan()
        self.runner = runner or self._make_runner()
        self.report = BuildReport(recipe=recipe.to_dict(), runner=options.runner)

    def _make_runner(self) -> Runner:
        if self.options.runner == "local":
            return LocalRunner(self.options.workers, self.options.batch_size, self.options.show_progress)
        if self.options.runner == "ray":
            from laion_hf.runners.ray import RayRunner

            return RayRunner(
                address=self.options.ray_address,
                num_cpus=None if self.options.ray_address else self.options.workers,
                concurrency=self.options.workers,
                model_num_gpus=self.options.gpus_per_model_actor,
                batch_size=self.options.batch_size,
                show_progress=self.options.show_progress,
            )
        raise BuildError(f"--runner {self.options.runner!r}: local or ray")

    # -- step bookkeeping

    def step_dir(self, number: int, name: str) -> str:
        return join(self.options.output, STAGES_DIR, f"{number:02d}-{name}")

    def _step(self, number: int, name: str, run: Callable[[str], list[StageStats]]) -> str:
        """Run one step into its directory unless its done marker exists; record its stats."""
        directory = self.step_dir(number, name)
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
        return directory

    def _image_step(
        self, source: str, stages: list[Stage], uses_model: bool, sidecar: SidecarFactory | None = None
    ) -> Callable[[str], list[StageStats]]:
        def run(directory: str) -> list[StageStats]:
            records = self.runner.map_stages(image_shards(source), stages, directory, uses_model=uses_model, sidecar=sidecar)
            return stage_totals(records, [s.name for s in stages])

        return run

    # -- the steps

    def _plan(self) -> list[str]:
        """The steps to run, with their stages built now: a missing model or list fails before any work."""
        order = [s for s in ("extract", "download", "filter", "score", "dedup") if self.recipe.has(s)]
        if self.options.start_at == "configs":
            order = []
        elif self.options.start_at in order:
            order = order[order.index(self.options.start_at) :]
        self.image_stages: dict[str, list[Stage]] = {}
        if "filter" in order:
            self.image_stages["filter"] = filter_stages(self.recipe)
        if "score" in order:
            self.image_stages["score"] = score_stages(self.recipe)
        for config in self.recipe.configs:
            self.image_stages[f"configs/{config.name}"] = config_stages(config, self.options.removals)
        return order

    def run(self) -> BuildReport:
        started = time.perf_counter()
        source: Any = self.options.inputs
        for step in self.order:
            number = STEPS.index(step) + 1
            source = self._step(number, step, getattr(self, f"_{step}")(source))
        source_dir = self._single_input(source)
        config_dirs = {}
        for config in self.recipe.configs:
            directory = self._step(STEPS.index("configs") + 1, f"configs/{config.name}", self._config(source_dir, config))
            config_dirs[config.name] = directory
            self.report.configs[config.name] = {"rows": count_rows(directory), "dir": directory}
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
            raise BuildError(f"--start-at configs needs one directory of image shards, got {len(source)} inputs")
        return source[0]

    def _extract(self, inputs: list[str]) -> Callable[[str], list[StageStats]]:
        def run(directory: str) -> list[StageStats]:
            from laion_hf.steps.extract import extract

            started = time.perf_counter()
            report = extract(list(inputs), directory, runner=self.runner, **self.recipe.extract)
            return [as_stage_stats(report.total, wall=time.perf_counter() - started)]

        return run

    def _download(self, source: Any) -> Callable[[str], list[StageStats]]:
        def run(directory: str) -> list[StageStats]:
            from laion_hf.steps.download import download

            started = time.perf_counter()
            report = download(
                self._single_input(source),
                directory,
                processes=self.options.workers,
                allow_private_network=self.options.allow_private_network,
                runner=self.runner,
                **self.recipe.download,
            )
            return [as_stage_stats(report, wall=time.perf_counter() - started)]

        return run

    def _filter(self, source: Any) -> Callable[[str], list[StageStats]]:
        from laion_hf.steps.filter import EmbeddingWriter

        return self._image_step(self._single_input(source), self.image_stages["filter"], uses_model=True, sidecar=EmbeddingWriter)

    def _score(self, source: Any) -> Callable[[str], list[StageStats]]:
        return self._image_step(self._single_input(source), self.image_stages["score"], uses_model=True)

    def _dedup(self, source: Any) -> Callable[[str], list[StageStats]]:
        def run(directory: str) -> list[StageStats]:
            from laion_hf.steps.dedup import dedup_shards

            source_dir = self._single_input(source)
            started = time.perf_counter()
            report = dedup_shards(source_dir, directory, max_distance=self.recipe.dedup.near_duplicate_max_distance,
                                  batch_size=self.options.batch_size, runner=self.runner)
            return [as_stage_stats(report.stats, wall=time.perf_counter() - started)]

        return run

    def _config(self, source: str, config: ConfigSpec) -> Callable[[str], list[StageStats]]:
        return self._image_step(source, self.image_stages[f"configs/{config.name}"], uses_model=False)

    def _publish(self, config_dirs: dict[str, str]) -> None:
        folder = join(self.options.output, HUB_DIR)
        directory = self.step_dir(STEPS.index("publish") + 1, "publish")
        recorded = read_done(directory, STEP_MARKER)
        if recorded is None:
            self.report.models = model_records(self.recipe)
            started = time.perf_counter()
            card = publish(self.recipe, self.report, config_dirs, folder, self.options)
            recorded = {"step": "publish", "folder": folder, "card": card, "seconds": time.perf_counter() - started}
            mark_done(directory, STEP_MARKER, recorded)
        self.report.step_seconds["publish"] = recorded["seconds"]
        self.report.hub_folder = recorded["folder"]
        self.report.card = recorded["card"]


def model_weights(recipe: Recipe, ref: str) -> str | None:
    """The weights to load for model ``ref``: a resolved local path, or an open_clip tag as written."""
    from laion_hf.recipes.recipe import resolve_file

    spec = recipe.models[ref]
    weights = spec.path or spec.pretrained
    if weights is None:
        return None
    local = resolve_file(weights, recipe.path)
    return local if Path(local).exists() else weights


def head_weights(recipe: Recipe, ref: str) -> str:
    """A score head's weights file, which must exist (heads have no download tags)."""
    from laion_hf.recipes import RecipeError

    weights = model_weights(recipe, ref)
    if weights is None or not Path(weights).exists():
        raise RecipeError(
            f"{recipe.path}: models.{ref} ({recipe.models[ref].name}): weights {weights or '(path: null)'} not found; "
            "set models.{ref}.path to a local checkpoint".replace("{ref}", ref)
        )
    return weights


def filter_stages(recipe: Recipe) -> list[Stage]:
    """The recipe's language selection (LAION-400M: English) and CLIP similarity filter."""
    spec = recipe.filter
    stages: list[Stage] = []
    if spec.languages is not None:
        stages.append(LanguageStage(language_in=spec.languages, reason="language"))
    stages.extend(clip_filter_stages(recipe))
    return stages


def clip_filter_stages(recipe: Recipe) -> list[Stage]:
    """CLIP embeddings (the multilingual text encoder for non-English captions where the recipe asks) + the threshold."""
    from laion_hf.stages.embed import ClipEmbed
    from laion_hf.stages.filter import SimilarityFilter

    spec = recipe.filter
    multilingual: str | None = None
    if spec.multilingual_model is not None:
        text = recipe.models[spec.multilingual_model]
        local = model_weights(recipe, spec.multilingual_model)
        if local is not None and Path(local).exists():
            multilingual = local
        else:  # a Hub id: organisation (written as ``pretrained``) / name
            multilingual = f"{text.pretrained}/{text.name}" if text.pretrained else text.name
    clip = recipe.models[spec.model]
    embed = ClipEmbed(
        clip.name,
        pretrained=model_weights(recipe, spec.model),
        multilingual=multilingual,
        batch_size=spec.batch_size,
    )
    multilingual_threshold = spec.multilingual_threshold.value if spec.multilingual_threshold else None
    return [embed, SimilarityFilter(spec.threshold.value, multilingual_threshold)]


def score_stages(recipe: Recipe) -> list[Stage]:
    """The recipe's score stage (heads on its CLIP's image embeddings), limits, and LAION-400M's tag."""
    from laion_hf.stages.score import ScoreStage, ThresholdStage

    spec = recipe.score
    heads = {column: head_weights(recipe, ref) for column, ref in spec.heads.items()}
    clip_ref = spec.clip or recipe.filter.model
    stages: list[Stage] = [
        ScoreStage(
            nsfw=heads.get("punsafe"),
            aesthetic=heads.get("aesthetic"),
            watermark=heads.get("pwatermark"),
            clip=recipe.models[clip_ref].name,
            clip_pretrained=model_weights(recipe, clip_ref),
            batch_size=spec.batch_size,
        )
    ]
    if spec.drop_above:
        stages.append(ThresholdStage(drop_above=dict(spec.drop_above)))
    if spec.nsfw_tag is not None:
        stages.append(NsfwTagStage(spec.nsfw_tag.unsure_at, spec.nsfw_tag.nsfw_at))
    return stages


def _option_names(function: Callable[..., Any], taken: set[str]) -> set[str]:
    parameters = inspect.signature(function).parameters
    return {name for name, p in parameters.items() if p.kind is p.KEYWORD_ONLY and name not in taken}


def check_stage_options(recipe: Recipe) -> None:
    """Refuse options under ``stages.extract`` / ``stages.download`` that the stage does not take."""
    from laion_hf.recipes import RecipeError

    allowed: dict[str, set[str]] = {}
    if recipe.has("extract"):
        from laion_hf.steps.extract import extract

        allowed["extract"] = _option_names(extract, {"show_progress", "runner"})
    if recipe.has("download"):
        from dataclasses import fields

        from laion_hf.steps.download import DownloadOptions, download

        taken = {"allow_private_network", "processes", "workers", "show_progress", "retry_failed", "runner"}
        allowed["download"] = (_option_names(download, taken) | {f.name for f in fields(DownloadOptions)}) - taken
    for stage, names in allowed.items():
        for key in getattr(recipe, stage):
            if key not in names:
                raise RecipeError(f"{recipe.path}: stages.{stage}.{key}: unknown option (allowed: {', '.join(sorted(names))})")


def config_stages(config: ConfigSpec, extra_removals: Sequence[tuple[str, str]] = ()) -> list[Stage]:
    """The stages that make one config: removal lists / punsafe / keywords, then the language subset."""
    stages: list[Stage] = []
    specs = [(r.kind, r.file) for r in config.remove] + list(extra_removals)
    keywords = load_keywords(config.keyword_file) if config.keyword_file else []
    if specs or config.punsafe_above is not None or keywords:
        stages.append(
            RemovalStage(
                removal=load_removal_sets(specs) if specs else None,
                punsafe_threshold=config.punsafe_above,
                keyword_regex=keyword_pattern(keywords),
                name=f"{config.name}: removal",
            )
        )
    if config.language_in or config.language_not_in or config.language_detected is not None:
        stages.append(
            LanguageStage(
                language_in=config.language_in,
                language_not_in=config.language_not_in,
                language_detected=config.language_detected,
                reason="other-subset",
                name=f"{config.name}: subset",
            )
        )
    return stages


def as_stage_stats(stats: StageStats, wall: float) -> StageStats:
    """A plain StageStats from a whole-run step's report, timed by the step's wall clock.

    Image steps time each stage's work per batch; a whole-run step (extract,
    download, dedup) is timed as the user waits for it.
    """
    return StageStats(stats.stage, stats.rows_in, stats.kept, Counter(stats.dropped), wall)


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


def publish(recipe: Recipe, report: BuildReport, config_dirs: dict[str, str], folder: str, options: BuildOptions) -> str:
    """Lay out the configs for the Hub in ``folder`` with plots and the card; returns the card's path.

    The card's claims come from this build's report (as ``build_report.json``
    will hold it, with the removal lists given on the command line).
    """
    from laion_hf.hub.publish import publish_folder

    evidence = {**report.to_dict(), "removals": [list(removal) for removal in options.removals]}
    publish_folder(
        config_dirs,
        folder,
        family=recipe.card,
        context=card_context(recipe, options),
        reports={name: {REPORT_FILE: evidence} for name in config_dirs},
        format=options.hub_format,
        default=recipe.default_config.name,
    )
    return join(folder, "README.md")
