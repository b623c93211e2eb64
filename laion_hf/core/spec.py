"""Typed access to YAML specs (recipes and the steps' parts of them) with errors naming file, line and key.

Recipes are data a user edits: a typo or an out-of-range value must be an
error that says where (``my.yaml:12: steps.filter.threshold: 1.5 is out of
range [-1, 1]``), before any work starts.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from laion_hf.core.errors import UserError

PACKAGE_PREFIX = "pkg:"


class RecipeError(UserError, ValueError):
    """A recipe file is missing, malformed or inconsistent; the message names file, line and key."""


class SpecReader:
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


def resolve_file(reference: str, relative_to: str) -> str:
    """A file named in a recipe: ``pkg:package/path`` inside laion-hf, else relative to the recipe."""
    if reference.startswith(PACKAGE_PREFIX):
        package, _, inner = reference[len(PACKAGE_PREFIX) :].partition("/")
        return str(resources.files(package).joinpath(inner))
    path = Path(reference).expanduser()
    return str(path if path.is_absolute() else Path(relative_to).parent / path)
