"""One call from laion-hf outputs to a Hub-ready folder: layout, plots, card.

Clean, build and OIG all publish through :func:`publish_folder`: a mapping
config name -> shard directory, a card family, and a context dict (report,
recipe, models...) that the card renders.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from laion_hf.errors import UserError
from laion_hf.hub.card import render_card, write_card
from laion_hf.hub.layout import DEFAULT_TARGET_SHARD_BYTES, Format, HubLayout, write_hub_folder
from laion_hf.hub.plots import save_plots
from laion_hf.io.shards import discover_shards


def publish_folder(
    sources: Mapping[str, str],
    folder: str | Path,
    *,
    family: str,
    context: Mapping[str, Any] | None = None,
    format: Format = "webdataset",
    default: str | None = None,
    split: str = "train",
    include_images: bool = False,
    target_shard_bytes: int = DEFAULT_TARGET_SHARD_BYTES,
    plots: bool = True,
    template_dir: str | Path | None = None,
) -> HubLayout:
    """Write ``folder`` with every config's shards, distribution plots and README.md; returns the layout.

    Plots are drawn from the default config's metadata parquet (the rows a
    user gets by default).
    """
    layout = write_hub_folder(
        sources,
        str(folder),
        format=format,
        split=split,
        default=default,
        target_shard_bytes=target_shard_bytes,
        include_images=include_images,
    )
    saved = []
    if plots:
        parquets = [shard.parquet for shard in discover_shards(sources[layout.default])]
        saved = save_plots(parquets, folder)
    card = render_card(family, context or {}, layout=layout, plots=saved, template_dir=template_dir)
    write_card(card, folder)
    return layout


def discover_sources(output_dir: str | Path) -> dict[str, str]:
    """Configs of a laion-hf output: one per subdirectory holding shards, or the directory itself as ``default``."""
    root = Path(output_dir)
    if not root.is_dir():
        raise UserError(f"{root}: not a directory")
    sources = {}
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if any(child.glob("*.parquet")):
            sources[child.name] = str(child)
    if not sources and any(root.glob("*.parquet")):
        sources["default"] = str(root)
    if not sources:
        raise UserError(f"{root}: no parquet shards in it or in its subdirectories")
    return sources


def report_context(sources: Mapping[str, str], default: str | None = None) -> dict[str, Any]:
    """Card context from the reports the pipeline left beside the shards (``*_report.json``).

    Each config's report total becomes a row of the stage table; the default
    config's report gives the removal reasons.
    """
    stages, context = [], {}
    default = default or next(iter(sources))
    for name, directory in sources.items():
        for path in sorted(Path(directory).glob("*_report.json")):
            report = json.loads(path.read_text(encoding="utf-8"))
            total = report.get("total")
            if total:
                stages.append({**total, "stage": f"{path.stem.removesuffix('_report')} -> {name}"})
            if name == default:
                context.update(_from_report(report))
    if stages:
        context["stages"] = stages
    return context


def _from_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """The card's recipe, removal lists (with checksums) and known issues, from a pipeline report."""
    options = report.get("options") or {}
    recipe = {k: v for k, v in options.items() if k in ("variant", "punsafe_threshold", "keep_reference", "metadata") and v is not None}
    lists = [{**entry, "sha256": _file_sha256(entry.get("path"))} for entry in report.get("removal_lists") or []]
    issues = list(report.get("notes") or [])
    issues += [f"image {alg} matched against: {'; '.join(sources)}" for alg, sources in (report.get("image_hash_source") or {}).items()]
    context: dict[str, Any] = {"report": dict(report), "removal_lists": lists, "known_issues": issues}
    if recipe:
        context["recipe"] = recipe
    if options.get("variant") or options.get("punsafe_threshold") is not None:
        from laion_hf.clean.removal import resolve_threshold

        threshold = resolve_threshold(options.get("variant"), options.get("punsafe_threshold"))
        if threshold is not None:
            context["thresholds"] = {"punsafe (rows strictly above removed)": threshold}
    return context


def _file_sha256(path: str | None) -> str:
    """Checksum of a list file, so the card pins exactly which list was applied ("unavailable" if gone)."""
    import hashlib

    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except (OSError, TypeError):
        return "unavailable"
