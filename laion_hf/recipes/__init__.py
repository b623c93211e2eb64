"""Recipes: the stages, models and thresholds of each LAION family, as versioned YAML files.

``load_recipe("laion400m")`` or ``load_recipe("my-copy.yaml", overrides)`` returns
a validated :class:`Recipe`; see :mod:`laion_hf.recipes.recipe` for the format.
"""

from laion_hf.recipes.recipe import (
    ConfigSpec,
    DedupSpec,
    FilterSpec,
    ModelSpec,
    Recipe,
    RecipeError,
    ScoreSpec,
    Threshold,
    builtin_recipes,
    load_recipe,
    parse_override,
)

__all__ = [
    "ConfigSpec",
    "DedupSpec",
    "FilterSpec",
    "ModelSpec",
    "Recipe",
    "RecipeError",
    "ScoreSpec",
    "Threshold",
    "builtin_recipes",
    "load_recipe",
    "parse_override",
]
