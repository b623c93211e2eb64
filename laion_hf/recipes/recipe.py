"""Recipes: which steps, models and thresholds make a dataset family, as data.

A recipe is a YAML file (``laion_hf/recipes/<name>.yaml`` or any path) that a
user copies and edits: change a threshold or a model, pass ``--recipe
my.yaml``. This module turns it into a typed, validated :class:`Recipe`, so a
typo or an out-of-range threshold is an error naming the file, line and key
before any work starts, never a surprise in the middle of a crawl.

``steps`` is the step list, in the order the steps run: each key is a step of
the registry (:mod:`laion_hf.steps.registry`), whose parser reads its spec;
each step must read what the one before it writes (``steps.score: false``,
e.g. from ``--set``, turns one off). ``configs`` are the published variants /
subsets, each built from the last step's shards by removal lists, a punsafe
limit, a keyword filter and a language selection.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from laion_hf.core.spec import RecipeError, SpecReader, resolve_file
from laion_hf.io.removal_lists import KINDS as REMOVAL_KINDS
from laion_hf.steps.specs import ConfigSpec, DedupSpec, FilterSpec, ModelSpec, RemovalSpec, ScoreSpec

FORMAT_VERSION = 1


# ---------------------------------------------------------------- typed recipe


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. ``path`` is the file it came from; ``raw`` the data after overrides."""

    name: str
    version: str
    description: str
    source: Mapping[str, Any]
    card: str
    models: Mapping[str, ModelSpec]
    steps: Mapping[str, Any]  # step name -> its parsed spec, in the order the steps run
    configs: tuple[ConfigSpec, ...]
    path: str
    raw: Mapping[str, Any]

    def has(self, step: str) -> bool:
        return step in self.steps

    @property
    def filter(self) -> FilterSpec | None:
        return self.steps.get("filter")

    @property
    def score(self) -> ScoreSpec | None:
        return self.steps.get("score")

    @property
    def dedup(self) -> DedupSpec | None:
        return self.steps.get("dedup")

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
    """Parse YAML and remember the line of every key path (``steps.filter.threshold``)."""
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


# ---------------------------------------------------------------- locating files


def builtin_recipes() -> list[str]:
    """Names of the recipes shipped with laion-hf."""
    return sorted(p.name[:-5] for p in resources.files("laion_hf.recipes").iterdir() if p.name.endswith(".yaml"))


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
    """Set ``dotted`` (``steps.filter.threshold``, ``configs.research.punsafe_above``) to ``value``.

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
        raise RecipeError(f"--set {spec!r}: expected KEY=VALUE, e.g. steps.filter.threshold=0.3")
    try:
        return key, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {spec!r}: value is not valid YAML ({exc})") from exc


# ---------------------------------------------------------------- parsing


def _parse_models(r: SpecReader, value: Any) -> dict[str, ModelSpec]:
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


def _parse_configs(r: SpecReader, value: Any) -> tuple[ConfigSpec, ...]:
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


def _parse_steps(r: SpecReader, value: Any, models: Mapping[str, ModelSpec]) -> dict[str, Any]:
    """The step list, in order: registered names, each reading what the previous step writes, specs parsed."""
    from laion_hf.steps.registry import STEPS

    raw = r.mapping(value, "steps", tuple(STEPS))
    steps: dict[str, Any] = {}
    previous = None
    for name, spec in raw.items():
        if spec is False:
            continue
        step = STEPS[name]
        if previous is not None and step.reads != previous.writes:
            raise r.error(f"steps.{name}", f"reads {step.reads}, but {previous.name} before it writes {previous.writes}")
        steps[name] = step.parse(r, spec, models, f"steps.{name}")
        previous = step
    if "score" in steps and steps["score"].clip is None:
        if "filter" not in steps:
            raise r.error("steps.score", "name the CLIP whose embeddings the heads read (clip: ...) when there is no filter step")
        steps["score"] = replace(steps["score"], clip=steps["filter"].model)  # the heads read the filter's CLIP
    if not steps:
        raise r.error("steps", "name at least one step")
    return steps


def parse_recipe(data: Any, path: str, lines: dict[str, int] | None = None) -> Recipe:
    """Validate raw recipe data (as loaded from YAML, overrides applied) into a :class:`Recipe`."""
    r = SpecReader(path, lines or {})
    top = r.mapping(
        data,
        "",
        ("format", "recipe", "version", "description", "source", "card", "models", "steps", "stages", "configs"),
        ("format", "recipe", "version", "source", "configs"),
    )
    if "stages" in top:
        raise r.error("stages", "the step list is now called steps: (rename the key; its entries are unchanged)")
    if "steps" not in top:
        raise r.error("recipe", "missing required key 'steps'")
    if top["format"] != FORMAT_VERSION:
        raise r.error("format", f"this laion-hf reads recipe format {FORMAT_VERSION}, not {top['format']!r}")
    source = r.mapping(top["source"], "source", ("paper", "code", "release", "notes"))
    if not source:
        raise r.error("source", "say where the recipe comes from (paper, code, release)")
    models = _parse_models(r, top.get("models"))
    steps = _parse_steps(r, top["steps"], models)
    recipe = Recipe(
        name=r.string(top["recipe"], "recipe"),
        version=str(top["version"]),
        description=str(top.get("description") or "").strip(),
        source=source,
        card=r.string(top.get("card", top["recipe"]), "card"),
        models=models,
        steps=steps,
        configs=_parse_configs(r, top["configs"]),
        path=path,
        raw=data,
    )
    if any(c.punsafe_above is not None for c in recipe.configs) and not (
        recipe.score and "punsafe" in recipe.score.heads
    ):
        raise r.error("configs", "a config limits punsafe but steps.score has no punsafe head")
    return recipe


def load_recipe(name_or_path: str, overrides: Mapping[str, Any] | None = None) -> Recipe:
    """Load a built-in recipe by name, or a recipe file, apply ``overrides`` and validate it.

    ``overrides`` maps dotted keys to values (``{"steps.filter.threshold": 0.25}``),
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
