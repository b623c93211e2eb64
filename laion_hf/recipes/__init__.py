"""Recipes: the steps, models and thresholds of each LAION family, as versioned YAML files.

``load_recipe("laion400m")`` or ``load_recipe("my-copy.yaml", overrides)`` returns
a validated :class:`Recipe`; see :mod:`laion_hf.recipes.recipe` for the format.
"""

from laion_hf.core.spec import RecipeError
from laion_hf.recipes.recipe import ConfigSpec, Recipe, builtin_recipes, load_recipe, parse_override

__all__ = ["ConfigSpec", "Recipe", "RecipeError", "builtin_recipes", "load_recipe", "parse_override"]
