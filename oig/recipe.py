"""The recipe: one YAML file naming the constituents (source + template), thresholds, dedup and decontamination.

Paths in a recipe are relative to the recipe file, so a recipe and its sources
can move together; ``${NAME}`` in a source or benchmark path is read from the
environment (``${OIG_REAL_DATA}/dev-v2.0.json``), so a recipe over data that lives
elsewhere can ship. Errors name the recipe file, the line and the key
(``recipe.yaml:3: seed: expected an integer, got 'twelve'``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from laion_hf.core.errors import UserError
from oig.pii import DEFAULT_PHONE_REGIONS, PiiDetector
from oig.quality import QualityThresholds
from oig.render import load_yaml

RESERVED = ("all", "moderation")
DEDUP_KEYS = ("scope", "near", "threshold", "num_perm", "shingle_size")
PII_KEYS = ("phone_regions",)
_VARIABLE = re.compile(r"\$\{(\w+)\}")
DECONTAMINATE_KEYS = ("n", "action", "benchmarks")
_CONFIG_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


class RecipeError(UserError):
    """A recipe that is malformed; the message names the file and key."""


class Locator:
    """Names a key of a recipe as ``file:line: dotted.key`` (the YAML is parsed for line marks only on error)."""

    def __init__(self, path: Path):
        self.path = path

    @cached_property
    def _root(self) -> yaml.Node | None:
        return yaml.compose(self.path.read_text(encoding="utf-8"))

    def __call__(self, *keys: str | int) -> str:
        node, line = self._root, None
        for key in keys:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == str(key)), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
            else:
                node = None
            if node is None:
                break
            line = node.start_mark.line + 1
        dotted = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")
        return f"{self.path}:{line}: {dotted}" if line else f"{self.path}: {dotted}"


def _typed(data: dict[str, Any], key: str, kind: type, default: Any, locate: Locator, minimum: int | None = None) -> Any:
    value = data.get(key, default)
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind) or (minimum is not None and value < minimum):
        names = {int: "an integer", bool: "true or false", float: "a number"}
        floor = f" >= {minimum}" if minimum is not None else ""
        raise RecipeError(f"{locate(key)}: expected {names[kind]}{floor}, got {value!r}")
    return value


@dataclass(frozen=True)
class ConstituentSpec:
    name: str
    template: str
    source: dict[str, Any]
    quality: QualityThresholds


@dataclass(frozen=True)
class Recipe:
    path: Path
    seed: int
    batch_size: int
    constituents: tuple[ConstituentSpec, ...]
    moderation: ConstituentSpec | None
    dedup: dict[str, Any] = field(default_factory=dict)
    decontaminate: dict[str, Any] | None = None
    phone_regions: tuple[str, ...] | None = DEFAULT_PHONE_REGIONS
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        path = Path(path)
        if not path.exists():
            raise RecipeError(f"{path}: recipe not found")
        data = load_yaml(path)
        locate = Locator(path)
        known = {"seed", "batch_size", "quality", "dedup", "decontaminate", "pii", "constituents", "moderation", "card"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RecipeError(f"{path}: unknown keys {unknown} (known: {sorted(known)})")
        seed = _typed(data, "seed", int, 0, locate)
        batch_size = _typed(data, "batch_size", int, 512, locate, minimum=1)
        defaults = QualityThresholds.from_mapping(data.get("quality"), f"{path}: quality", locate=lambda k: locate("quality", k))
        entries = data.get("constituents")
        if not isinstance(entries, list) or not entries:
            raise RecipeError(f"{path}: `constituents` must be a non-empty list")
        constituents = tuple(_constituent(e, locate, ("constituents", i), defaults) for i, e in enumerate(entries))
        names = [c.name for c in constituents]
        for name in names:
            if name in RESERVED or names.count(name) > 1:
                raise RecipeError(f"{path}: constituent name {name!r} is reserved or repeated")
        moderation = data.get("moderation")
        dedup = data.get("dedup") or {}
        decontaminate = data.get("decontaminate")
        _known_keys(dedup, DEDUP_KEYS, f"{path}: dedup")
        _known_keys(decontaminate or {}, DECONTAMINATE_KEYS, f"{path}: decontaminate")
        if dedup.get("scope", "global") not in ("global", "constituent"):
            raise RecipeError(f"{path}: dedup.scope must be `global` or `constituent`")
        threshold = dedup.get("threshold", 0.8)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold <= 1:
            raise RecipeError(f"{locate('dedup', 'threshold')}: expected a number in (0, 1], got {threshold!r}")
        for key in ("num_perm", "shingle_size"):
            _typed(dedup, key, int, 1, lambda k: locate("dedup", k), minimum=1)
        if decontaminate:
            _typed(decontaminate, "n", int, 13, lambda k: locate("decontaminate", k), minimum=1)
            decontaminate = dict(decontaminate, benchmarks=[_expand_path(b, locate, ("decontaminate", "benchmarks", i))
                                                            for i, b in enumerate(decontaminate.get("benchmarks") or [])])
        return cls(
            path=path,
            seed=seed,
            batch_size=batch_size,
            constituents=constituents,
            moderation=_constituent({"name": "moderation", **moderation}, locate, ("moderation",), defaults) if moderation else None,
            dedup=dedup,
            decontaminate=decontaminate,
            phone_regions=_phone_regions(data.get("pii", True), locate),
            card=data.get("card") or {},
        )


def _phone_regions(pii: Any, locate: Locator) -> tuple[str, ...] | None:
    """``pii: false`` -> no scrubbing (None); ``true`` -> the default regions; ``{phone_regions: [...]}`` -> those."""
    if isinstance(pii, bool):
        return DEFAULT_PHONE_REGIONS if pii else None
    if not isinstance(pii, dict):
        raise RecipeError(f"{locate('pii')}: expected true, false or a mapping with `phone_regions`, got {pii!r}")
    _known_keys(pii, PII_KEYS, locate("pii"))
    regions = pii.get("phone_regions", list(DEFAULT_PHONE_REGIONS))
    if not isinstance(regions, list) or not all(isinstance(r, str) for r in regions):
        raise RecipeError(f"{locate('pii', 'phone_regions')}: expected a list of region codes (US, GB, ...), got {regions!r}")
    try:
        PiiDetector(regions)
    except UserError as exc:
        raise RecipeError(f"{locate('pii', 'phone_regions')}: {exc}") from exc
    return tuple(regions)


def _expand_path(source: Any, locate: Locator, keys: tuple) -> Any:
    """A source mapping with ``${NAME}`` in its path read from the environment (an unset name is an error)."""
    if not isinstance(source, dict) or not isinstance(source.get("path"), str):
        return source

    def value(match: re.Match) -> str:
        if match.group(1) not in os.environ:
            raise RecipeError(f"{locate(*keys, 'path')}: environment variable {match.group(1)} is not set")
        return os.environ[match.group(1)]

    return dict(source, path=_VARIABLE.sub(value, source["path"]))


def _known_keys(section: Any, known: tuple[str, ...], where: str) -> None:
    if not isinstance(section, dict):
        raise RecipeError(f"{where}: expected a mapping")
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise RecipeError(f"{where}: unknown keys {unknown} (known: {list(known)})")


def _constituent(entry: Any, locate: Locator, keys: tuple, defaults: QualityThresholds) -> ConstituentSpec:
    where = locate(*keys)
    if not isinstance(entry, dict):
        raise RecipeError(f"{where}: expected a mapping")
    for key in ("name", "source"):
        if key not in entry:
            raise RecipeError(f"{where}: missing `{key}`")
    name = str(entry["name"])
    if not _CONFIG_NAME.match(name):
        raise RecipeError(f"{where}: name {name!r} must be lower-case letters, digits and underscores")
    if not isinstance(entry["source"], dict) or "path" not in entry["source"]:
        raise RecipeError(f"{locate(*keys, 'source')}: expected a mapping with a `path`")
    quality = QualityThresholds.from_mapping(
        entry.get("quality"), f"{where}.quality", base=defaults, locate=lambda k: locate(*keys, "quality", k)
    )
    return ConstituentSpec(
        name=name,
        template=str(entry.get("template", name)),
        source=_expand_path(dict(entry["source"]), locate, (*keys, "source")),
        quality=quality,
    )
