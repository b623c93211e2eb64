"""What a recipe says about each step, typed: models, thresholds, filter, score and dedup specs, and their parsers.

Each parser takes the step's raw YAML value and returns its spec or raises a
:class:`~laion_hf.core.spec.RecipeError` naming file, line and key. The step
registry (:mod:`laion_hf.steps.registry`) names the parser of every step; this
module imports nothing heavy, so reading a recipe never loads torch.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from laion_hf.core.spec import RecipeError, SpecReader, resolve_file

SCORE_HEADS = ("punsafe", "pwatermark", "aesthetic")


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


def parse_threshold(r: SpecReader, value: Any, key: str, low: float, high: float) -> Threshold:
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


def model_ref(r: SpecReader, value: Any, key: str, models: Mapping[str, ModelSpec]) -> str:
    name = r.string(value, key)
    if name not in models:
        raise r.error(key, f"unknown model {name!r} (models: {', '.join(models) or 'none'})")
    return name


def parse_filter(r: SpecReader, value: Any, models: Mapping[str, ModelSpec], key: str) -> FilterSpec:
    spec = r.mapping(
        value,
        key,
        ("model", "threshold", "multilingual", "english_language", "languages", "batch_size"),
        ("model", "threshold"),
    )
    multilingual_model = multilingual_threshold = None
    if spec.get("multilingual") is not None:
        multi = r.mapping(spec["multilingual"], f"{key}.multilingual", ("model", "threshold"), ("model", "threshold"))
        multilingual_model = model_ref(r, multi["model"], f"{key}.multilingual.model", models)
        multilingual_threshold = parse_threshold(r, multi["threshold"], f"{key}.multilingual.threshold", -1.0, 1.0)
    return FilterSpec(
        model=model_ref(r, spec["model"], f"{key}.model", models),
        threshold=parse_threshold(r, spec["threshold"], f"{key}.threshold", -1.0, 1.0),
        multilingual_model=multilingual_model,
        multilingual_threshold=multilingual_threshold,
        english_language=r.string(spec.get("english_language", "en"), f"{key}.english_language"),
        languages=r.strings(spec.get("languages"), f"{key}.languages"),
        batch_size=r.integer(spec.get("batch_size", 64), f"{key}.batch_size"),
    )


def parse_score(r: SpecReader, value: Any, models: Mapping[str, ModelSpec], key: str) -> ScoreSpec:
    spec = r.mapping(value, key, ("heads", "clip", "drop_above", "nsfw_tag", "batch_size"), ("heads",))
    heads_raw = r.mapping(spec["heads"], f"{key}.heads", SCORE_HEADS)
    if not heads_raw:
        raise r.error(f"{key}.heads", f"name at least one head ({', '.join(SCORE_HEADS)})")
    heads = {head: model_ref(r, ref, f"{key}.heads.{head}", models) for head, ref in heads_raw.items()}
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
    clip = model_ref(r, spec["clip"], f"{key}.clip", models) if spec.get("clip") is not None else None
    return ScoreSpec(heads, clip, drop_above, nsfw_tag, r.integer(spec.get("batch_size", 64), f"{key}.batch_size"))


def parse_dedup(r: SpecReader, value: Any, models: Mapping[str, ModelSpec], key: str) -> DedupSpec:
    spec = r.mapping(value, key, ("near_duplicate_max_distance",))
    near = spec.get("near_duplicate_max_distance")
    return DedupSpec(None if near is None else r.integer(near, f"{key}.near_duplicate_max_distance", low=0))


def keyword_options(function: Callable[..., Any], taken: set[str]) -> set[str]:
    """The keyword-only parameters of ``function`` a recipe may set (those the pipeline sets itself excluded)."""
    parameters = inspect.signature(function).parameters
    return {name for name, p in parameters.items() if p.kind is p.KEYWORD_ONLY and name not in taken}


def parse_options(r: SpecReader, value: Any, key: str, allowed: set[str]) -> dict[str, Any]:
    """A mapping of a function's options (extract, download): unknown names are refused, values passed as they are."""
    options = r.mapping(value, key, tuple(value or {}))
    for name in options:
        if name not in allowed:
            raise r.error(f"{key}.{name}", f"unknown option (allowed: {', '.join(sorted(allowed))})")
    return dict(options)


def model_weights(models: Mapping[str, ModelSpec], ref: str, recipe_path: str) -> str | None:
    """The weights to load for model ``ref``: a resolved local path, or an open_clip tag as written."""
    spec = models[ref]
    weights = spec.path or spec.pretrained
    if weights is None:
        return None
    local = resolve_file(weights, recipe_path)
    return local if Path(local).exists() else weights


def head_weights(models: Mapping[str, ModelSpec], ref: str, recipe_path: str) -> str:
    """A score head's weights file, which must exist (heads have no download tags)."""
    weights = model_weights(models, ref, recipe_path)
    if weights is None or not Path(weights).exists():
        raise RecipeError(
            f"{recipe_path}: models.{ref} ({models[ref].name}): weights {weights or '(path: null)'} not found; "
            f"set models.{ref}.path to a local checkpoint"
        )
    return weights
