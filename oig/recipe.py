"""The recipe: one YAML file naming the constituents (source + template), thresholds, dedup and decontamination.

Paths in a recipe are relative to the recipe file, so a recipe and its sources
can move together. Errors name the recipe file and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from laion_hf.errors import UserError
from oig.quality import QualityThresholds
from oig.render import load_yaml

RESERVED = ("all", "moderation")
DEDUP_KEYS = ("scope", "near", "threshold", "num_perm", "shingle_size")
DECONTAMINATE_KEYS = ("n", "action", "benchmarks")
_CONFIG_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


class RecipeError(UserError):
    """A recipe that is malformed; the message names the file and key."""


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
    pii: bool = True
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
        known = {"seed", "batch_size", "quality", "dedup", "decontaminate", "pii", "constituents", "moderation", "card"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RecipeError(f"{path}: unknown keys {unknown} (known: {sorted(known)})")
        defaults = QualityThresholds.from_mapping(data.get("quality"), f"{path}: quality")
        entries = data.get("constituents")
        if not isinstance(entries, list) or not entries:
            raise RecipeError(f"{path}: `constituents` must be a non-empty list")
        constituents = tuple(_constituent(e, f"{path}: constituents[{i}]", defaults) for i, e in enumerate(entries))
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
        return cls(
            path=path,
            seed=int(data.get("seed", 0)),
            batch_size=int(data.get("batch_size", 512)),
            constituents=constituents,
            moderation=_constituent({"name": "moderation", **moderation}, f"{path}: moderation", defaults)
            if moderation
            else None,
            dedup=dedup,
            decontaminate=decontaminate,
            pii=bool(data.get("pii", True)),
            card=data.get("card") or {},
        )


def _known_keys(section: Any, known: tuple[str, ...], where: str) -> None:
    if not isinstance(section, dict):
        raise RecipeError(f"{where}: expected a mapping")
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise RecipeError(f"{where}: unknown keys {unknown} (known: {list(known)})")


def _constituent(entry: Any, where: str, defaults: QualityThresholds) -> ConstituentSpec:
    if not isinstance(entry, dict):
        raise RecipeError(f"{where}: expected a mapping")
    for key in ("name", "source"):
        if key not in entry:
            raise RecipeError(f"{where}: missing `{key}`")
    name = str(entry["name"])
    if not _CONFIG_NAME.match(name):
        raise RecipeError(f"{where}: name {name!r} must be lower-case letters, digits and underscores")
    if not isinstance(entry["source"], dict) or "path" not in entry["source"]:
        raise RecipeError(f"{where}.source: expected a mapping with a `path`")
    return ConstituentSpec(
        name=name,
        template=str(entry.get("template", name)),
        source=dict(entry["source"]),
        quality=QualityThresholds.from_mapping(entry.get("quality"), f"{where}.quality", base=defaults),
    )
