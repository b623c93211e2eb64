"""Recipes: which stages, models and thresholds make a dataset family, as data.

A recipe is a YAML file (``laion_hf/recipes/<name>.yaml`` or any path) that a
user copies and edits: change a threshold or a model, pass ``--recipe
my.yaml``. This module turns it into a typed, validated :class:`Recipe`, so a
typo or an out-of-range threshold is an error naming the file, line and key
before any work starts, never a surprise in the middle of a crawl.

The pipeline order is fixed (extract -> download -> filter -> score -> dedup
-> configs); a recipe enables a stage by listing it under ``stages`` and
configures it there (``stages.score: false``, e.g. from ``--set``, turns one off). ``configs`` are the published variants / subsets, each
built from the deduplicated shards by removal lists, a punsafe limit, a
keyword filter and a language selection.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from laion_hf.core.errors import UserError
from laion_hf.io.removal_lists import KINDS as REMOVAL_KINDS

FORMAT_VERSION = 1
PACKAGE_PREFIX = "pkg:"
STAGE_ORDER = ("extract", "download", "filter", "score", "dedup")
SCORE_HEADS = ("punsafe", "pwatermark", "aesthetic")


class RecipeError(UserError, ValueError):
    """A recipe file is missing, malformed or inconsistent; the message names file, line and key."""


# ---------------------------------------------------------------- typed recipe


@dataclass(frozen=True)
class ModelSpec:
    """A model by what the factory accepts: an open_clip / head name, and optionally weights.

    ``pretrained`` is an open_clip tag (``openai``) or a local path; ``path`` a
    local weight file for heads. The checksum is not written in the recipe: the
    build computes it from the file it actually loaded and records it in the card.
    """

    name: str
    pretrained: str | None = None
    path: str | None = None
    tokenizer: str | None = None


@dataclass(frozen=True)
class Threshold:
    """A number, and where it came from (the recipe itself, or a calibration file)."""

    value: float
    source: str


@dataclass(frozen=True)
class FilterSpec:
    """CLIP filter: keep pairs whose image/text cosine similarity is at least ``threshold``.

    With ``multilingual``, captions whose language is not ``english_language``
    are embedded by that text model and compared against its own threshold
    (LAION-5B's rule). ``languages`` keeps only captions detected in those
    languages (LAION-400M kept English).
    """

    model: str
    threshold: Threshold
    multilingual_model: str | None = None
    multilingual_threshold: Threshold | None = None
    english_language: str = "en"
    languages: tuple[str, ...] | None = None
    batch_size: int = 64


@dataclass(frozen=True)
class NsfwTagSpec:
    """LAION-400M's three-level NSFW tag, derived from punsafe (tags, never drops)."""

    unsure_at: float
    nsfw_at: float


@dataclass(frozen=True)
class ScoreSpec:
    """Score heads (model references) to run, and score limits that drop rows (``column: max``).

    ``clip`` is the CLIP whose image embeddings the heads read (LAION: ViT-L/14);
    None means the filter's model.
    """

    heads: Mapping[str, str]
    clip: str | None = None
    drop_above: Mapping[str, float] = field(default_factory=dict)
    nsfw_tag: NsfwTagSpec | None = None
    batch_size: int = 64


@dataclass(frozen=True)
class DedupSpec:
    """Dedup across the whole run: exact on the LAION hash, and optionally near-duplicate images.

    ``near_duplicate_max_distance``: two images whose 64-bit perceptual hashes
    differ in at most this many bits are the same picture (None: exact only,
    as LAION's releases did).
    """

    near_duplicate_max_distance: int | None = None


@dataclass(frozen=True)
class RemovalSpec:
    """One removal list: ``kind`` (as in ``laion-hf clean --remove``) and its file."""

    kind: str
    file: str


@dataclass(frozen=True)
class ConfigSpec:
    """A published config (variant or subset) and the rules that select its rows."""

    name: str
    description: str = ""
    default: bool = False
    remove: tuple[RemovalSpec, ...] = ()
    punsafe_above: float | None = None
    keyword_file: str | None = None
    language_in: tuple[str, ...] | None = None
    language_not_in: tuple[str, ...] | None = None
    language_detected: bool | None = None


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. ``path`` is the file it came from; ``raw`` the data after overrides."""

    name: str
    version: str
    description: str
    source: Mapping[str, Any]
    card: str
    models: Mapping[str, ModelSpec]
    stages: tuple[str, ...]
    extract: Mapping[str, Any]
    download: Mapping[str, Any]
    filter: FilterSpec | None
    score: ScoreSpec | None
    dedup: DedupSpec | None
    configs: tuple[ConfigSpec, ...]
    path: str
    raw: Mapping[str, Any]

    def has(self, stage: str) -> bool:
        return stage in self.stages

    @property
    def default_config(self) -> ConfigSpec:
        return next(c for c in self.configs if c.default)

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe, as it goes into the build report and the card."""
        data = asdict(self)
        data["raw"] = copy.deepcopy(dict(self.raw))
        return data


# ---------------------------------------------------------------- YAML with line numbers


def _compose(text: str, path: str) -> tuple[Any, dict[str, int]]:
    """Parse YAML and remember the line of every key path (``stages.filter.threshold``)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML ({exc})") from exc
    lines: dict[str, int] = {}

    def walk(n: yaml.Node | None, key: str) -> None:
        if n is None:
            return
        lines.setdefault(key, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                child = f"{key}.{k.value}" if key else str(k.value)
                lines[child] = k.start_mark.line + 1
                walk(v, child)
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, f"{key}[{i}]")

    walk(node, "")
    data = yaml.safe_load(text) if node is not None else None
    return data, lines


class _Reader:
    """Typed access to the raw recipe that reports errors with file, line and key."""

    def __init__(self, path: str, lines: dict[str, int]):
        self.path = path
        self.lines = lines

    def error(self, key: str, message: str) -> RecipeError:
        probe = key
        while probe and probe not in self.lines:
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
        where = f":{self.lines[probe]}" if probe in self.lines else ""
        return RecipeError(f"{self.path}{where}: {key}: {message}")

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.error(key, f"expected a mapping, got {type(value).__name__}")
        for k in value:
            if k not in allowed:
                raise self.error(f"{key}.{k}" if key else str(k), f"unknown key (allowed: {', '.join(allowed)})")
        for k in required:
            if k not in value:
                raise self.error(key or "recipe", f"missing required key {k!r}")
        return value

    def string(self, value: Any, key: str, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"expected a non-empty string, got {value!r}")
        return value

    def number(self, value: Any, key: str, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected a number, got {value!r}")
        if not low <= value <= high:
            raise self.error(key, f"{value} is out of range [{low}, {high}]")
        return float(value)

    def integer(self, value: Any, key: str, low: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.error(key, f"expected an integer >= {low}, got {value!r}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def strings(self, value: Any, key: str) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, f"expected a list of strings, got {value!r}")
        return tuple(value)


# ---------------------------------------------------------------- locating files


def builtin_recipes() -> list[str]:
    """Names of the recipes shipped with laion-hf."""
    return sorted(p.name[:-5] for p in resources.files("laion_hf.recipes").iterdir() if p.name.endswith(".yaml"))


def resolve_file(reference: str, relative_to: str) -> str:
    """A file named in a recipe: ``pkg:package/path`` inside laion-hf, else relative to the recipe."""
    if reference.startswith(PACKAGE_PREFIX):
        package, _, inner = reference[len(PACKAGE_PREFIX) :].partition("/")
        return str(resources.files(package).joinpath(inner))
    path = Path(reference).expanduser()
    return str(path if path.is_absolute() else Path(relative_to).parent / path)


def recipe_path(name_or_path: str) -> str:
    """The file of a built-in recipe name, or the given path."""
    if name_or_path in builtin_recipes():
        return str(resources.files("laion_hf.recipes").joinpath(f"{name_or_path}.yaml"))
    if Path(name_or_path).is_file():
        return name_or_path
    raise RecipeError(
        f"--recipe {name_or_path!r}: neither a built-in recipe ({', '.join(builtin_recipes())}) nor a file"
    )


# ---------------------------------------------------------------- overrides


def apply_override(data: dict, dotted: str, value: Any) -> None:
    """Set ``dotted`` (``stages.filter.threshold``, ``configs.research.punsafe_above``) to ``value``.

    A list of named mappings (``configs``) is addressed by name.
    """
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            match = next((item for item in node if isinstance(item, dict) and item.get("name") == part), None)
            if match is None:
                raise RecipeError(f"--set {dotted}: no entry named {part!r}")
            if last:
                raise RecipeError(f"--set {dotted}: cannot replace a whole list entry")
            node = match
            continue
        if not isinstance(node, dict):
            raise RecipeError(f"--set {dotted}: {'.'.join(parts[:i])} is not a mapping")
        if last:
            node[part] = value
        else:
            node = node.setdefault(part, {})


def parse_override(spec: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from the command line; VALUE is read as YAML (``0.25``, ``[en]``, ``null``)."""
    key, sep, text = spec.partition("=")
    if not sep or not key:
        raise RecipeError(f"--set {spec!r}: expected KEY=VALUE, e.g. stages.filter.threshold=0.3")
    try:
        return key, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {spec!r}: value is not valid YAML ({exc})") from exc


# ---------------------------------------------------------------- parsing


def _threshold(r: _Reader, value: Any, key: str, low: float, high: float) -> Threshold:
    """A literal number, or ``{file: ..., key: ...}`` read from a calibration JSON."""
    if isinstance(value, dict):
        spec = r.mapping(value, key, ("file", "key"), ("file", "key"))
        file = resolve_file(r.string(spec["file"], f"{key}.file"), r.path)
        try:
            with open(file, encoding="utf-8") as f:
                payload = json.load(f)
        except (OSError, ValueError) as exc:
            raise r.error(f"{key}.file", f"cannot read {file} ({exc})") from exc
        node: Any = payload
        for part in str(spec["key"]).split("."):
            if not isinstance(node, dict) or part not in node:
                raise r.error(f"{key}.key", f"{file} has no key {spec['key']!r}")
            node = node[part]
        return Threshold(r.number(node, f"{key} (from {file})", low, high), f"{spec['file']}#{spec['key']}")
    return Threshold(r.number(value, key, low, high), "recipe")


def _model_ref(r: _Reader, value: Any, key: str, models: Mapping[str, ModelSpec]) -> str:
    name = r.string(value, key)
    if name not in models:
        raise r.error(key, f"unknown model {name!r} (models: {', '.join(models) or 'none'})")
    return name


def _parse_models(r: _Reader, value: Any) -> dict[str, ModelSpec]:
    models = {}
    for ref, spec in r.mapping(value, "models", tuple(value or {})).items():
        key = f"models.{ref}"
        spec = r.mapping(spec, key, ("name", "pretrained", "path", "tokenizer", "note"), ("name",))
        models[ref] = ModelSpec(
            name=r.string(spec["name"], f"{key}.name"),
            pretrained=r.string(spec.get("pretrained"), f"{key}.pretrained", optional=True),
            path=r.string(spec.get("path"), f"{key}.path", optional=True),
            tokenizer=r.string(spec.get("tokenizer"), f"{key}.tokenizer", optional=True),
        )
    return models


def _parse_filter(r: _Reader, value: Any, models: Mapping[str, ModelSpec]) -> FilterSpec:
    key = "stages.filter"
    spec = r.mapping(
        value,
        key,
        ("model", "threshold", "multilingual", "english_language", "languages", "batch_size"),
        ("model", "threshold"),
    )
    multilingual_model = multilingual_threshold = None
    if spec.get("multilingual") is not None:
        multi = r.mapping(spec["multilingual"], f"{key}.multilingual", ("model", "threshold"), ("model", "threshold"))
        multilingual_model = _model_ref(r, multi["model"], f"{key}.multilingual.model", models)
        multilingual_threshold = _threshold(r, multi["threshold"], f"{key}.multilingual.threshold", -1.0, 1.0)
    return FilterSpec(
        model=_model_ref(r, spec["model"], f"{key}.model", models),
        threshold=_threshold(r, spec["threshold"], f"{key}.threshold", -1.0, 1.0),
        multilingual_model=multilingual_model,
        multilingual_threshold=multilingual_threshold,
        english_language=r.string(spec.get("english_language", "en"), f"{key}.english_language"),
        languages=r.strings(spec.get("languages"), f"{key}.languages"),
        batch_size=r.integer(spec.get("batch_size", 64), f"{key}.batch_size"),
    )


def _parse_score(r: _Reader, value: Any, models: Mapping[str, ModelSpec]) -> ScoreSpec:
    key = "stages.score"
    spec = r.mapping(value, key, ("heads", "clip", "drop_above", "nsfw_tag", "batch_size"), ("heads",))
    heads_raw = r.mapping(spec["heads"], f"{key}.heads", SCORE_HEADS)
    if not heads_raw:
        raise r.error(f"{key}.heads", f"name at least one head ({', '.join(SCORE_HEADS)})")
    heads = {head: _model_ref(r, ref, f"{key}.heads.{head}", models) for head, ref in heads_raw.items()}
    drop_above = {}
    for column, limit in r.mapping(spec.get("drop_above"), f"{key}.drop_above", SCORE_HEADS).items():
        if column not in heads:
            raise r.error(f"{key}.drop_above.{column}", f"{column} is not scored (heads: {', '.join(heads)})")
        high = 100.0 if column == "aesthetic" else 1.0
        drop_above[column] = r.number(limit, f"{key}.drop_above.{column}", 0.0, high)
    nsfw_tag = None
    if spec.get("nsfw_tag") is not None:
        tag = r.mapping(spec["nsfw_tag"], f"{key}.nsfw_tag", ("unsure_at", "nsfw_at"), ("unsure_at", "nsfw_at"))
        if "punsafe" not in heads:
            raise r.error(f"{key}.nsfw_tag", "needs the punsafe head")
        unsure = r.number(tag["unsure_at"], f"{key}.nsfw_tag.unsure_at", 0.0, 1.0)
        nsfw = r.number(tag["nsfw_at"], f"{key}.nsfw_tag.nsfw_at", 0.0, 1.0)
        if unsure > nsfw:
            raise r.error(f"{key}.nsfw_tag", f"unsure_at {unsure} must not exceed nsfw_at {nsfw}")
        nsfw_tag = NsfwTagSpec(unsure, nsfw)
    clip = _model_ref(r, spec["clip"], f"{key}.clip", models) if spec.get("clip") is not None else None
    return ScoreSpec(heads, clip, drop_above, nsfw_tag, r.integer(spec.get("batch_size", 64), f"{key}.batch_size"))


def _parse_dedup(r: _Reader, value: Any) -> DedupSpec:
    key = "stages.dedup"
    spec = r.mapping(value, key, ("near_duplicate_max_distance",))
    near = spec.get("near_duplicate_max_distance")
    return DedupSpec(None if near is None else r.integer(near, f"{key}.near_duplicate_max_distance", low=0))


def _parse_configs(r: _Reader, value: Any) -> tuple[ConfigSpec, ...]:
    if not isinstance(value, list) or not value:
        raise r.error("configs", "expected a non-empty list of configs")
    allowed = (
        "name", "description", "default", "remove", "punsafe_above", "keyword_file",
        "language_in", "language_not_in", "language_detected",
    )
    configs = []
    for i, item in enumerate(value):
        key = f"configs[{i}]"
        spec = r.mapping(item, key, allowed, ("name",))
        name = r.string(spec["name"], f"{key}.name")
        removals = []
        for j, entry in enumerate(spec.get("remove") or []):
            entry_key = f"{key}.remove[{j}]"
            entry = r.mapping(entry, entry_key, ("kind", "file"), ("kind", "file"))
            if entry["kind"] not in REMOVAL_KINDS:
                raise r.error(f"{entry_key}.kind", f"unknown kind {entry['kind']!r} (one of {', '.join(REMOVAL_KINDS)})")
            removals.append(RemovalSpec(entry["kind"], resolve_file(r.string(entry["file"], f"{entry_key}.file"), r.path)))
        keyword_file = r.string(spec.get("keyword_file"), f"{key}.keyword_file", optional=True)
        punsafe = spec.get("punsafe_above")
        detected = spec.get("language_detected")
        configs.append(
            ConfigSpec(
                name=name,
                description=str(spec.get("description") or ""),
                default=r.boolean(spec.get("default", False), f"{key}.default"),
                remove=tuple(removals),
                punsafe_above=None if punsafe is None else r.number(punsafe, f"{key}.punsafe_above", 0.0, 1.0),
                keyword_file=resolve_file(keyword_file, r.path) if keyword_file else None,
                language_in=r.strings(spec.get("language_in"), f"{key}.language_in"),
                language_not_in=r.strings(spec.get("language_not_in"), f"{key}.language_not_in"),
                language_detected=None if detected is None else r.boolean(detected, f"{key}.language_detected"),
            )
        )
    names = [c.name for c in configs]
    for name in names:
        if names.count(name) > 1:
            raise r.error("configs", f"config name {name!r} is used twice")
        if not name.replace("-", "").replace("_", "").isalnum():
            raise r.error("configs", f"config name {name!r}: use letters, digits, '-' and '_' only")
    defaults = [c.name for c in configs if c.default]
    if len(configs) == 1 and not defaults:
        configs[0] = replace(configs[0], default=True)
    elif len(defaults) != 1:
        raise r.error("configs", f"exactly one config must have default: true (found {len(defaults)})")
    return tuple(configs)


def parse_recipe(data: Any, path: str, lines: dict[str, int] | None = None) -> Recipe:
    """Validate raw recipe data (as loaded from YAML, overrides applied) into a :class:`Recipe`."""
    r = _Reader(path, lines or {})
    top = r.mapping(
        data,
        "",
        ("format", "recipe", "version", "description", "source", "card", "models", "stages", "configs"),
        ("format", "recipe", "version", "source", "stages", "configs"),
    )
    if top["format"] != FORMAT_VERSION:
        raise r.error("format", f"this laion-hf reads recipe format {FORMAT_VERSION}, not {top['format']!r}")
    source = r.mapping(top["source"], "source", ("paper", "code", "release", "notes"))
    if not source:
        raise r.error("source", "say where the recipe comes from (paper, code, release)")
    models = _parse_models(r, top.get("models"))
    stages_raw = r.mapping(top["stages"], "stages", STAGE_ORDER)
    stages = tuple(s for s in STAGE_ORDER if s in stages_raw and stages_raw[s] is not False)
    if "extract" in stages and "download" not in stages:
        raise r.error("stages", "extract needs download after it (candidates have no images yet)")
    recipe = Recipe(
        name=r.string(top["recipe"], "recipe"),
        version=str(top["version"]),
        description=str(top.get("description") or "").strip(),
        source=source,
        card=r.string(top.get("card", top["recipe"]), "card"),
        models=models,
        stages=stages,
        extract=r.mapping(stages_raw.get("extract"), "stages.extract", tuple((stages_raw.get("extract") or {}))),
        download=r.mapping(stages_raw.get("download"), "stages.download", tuple((stages_raw.get("download") or {}))),
        filter=_parse_filter(r, stages_raw["filter"], models) if "filter" in stages else None,
        score=_parse_score(r, stages_raw["score"], models) if "score" in stages else None,
        dedup=_parse_dedup(r, stages_raw["dedup"]) if "dedup" in stages else None,
        configs=_parse_configs(r, top["configs"]),
        path=path,
        raw=data,
    )
    if recipe.score and recipe.score.clip is None and recipe.filter is None:
        raise r.error("stages.score", "name the CLIP whose embeddings the heads read (clip: ...) when there is no filter stage")
    if any(c.punsafe_above is not None for c in recipe.configs) and not (
        recipe.score and "punsafe" in recipe.score.heads
    ):
        raise r.error("configs", "a config limits punsafe but stages.score has no punsafe head")
    return recipe


def load_recipe(name_or_path: str, overrides: Mapping[str, Any] | None = None) -> Recipe:
    """Load a built-in recipe by name, or a recipe file, apply ``overrides`` and validate it.

    ``overrides`` maps dotted keys to values (``{"stages.filter.threshold": 0.25}``),
    as ``laion-hf build --set KEY=VALUE`` passes them.
    """
    path = recipe_path(name_or_path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read recipe ({exc})") from exc
    data, lines = _compose(text, path)
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping")
    for dotted, value in (overrides or {}).items():
        apply_override(data, dotted, value)
    return parse_recipe(data, path, lines)
