"""One call from laion-hf outputs to a Hub-ready folder: layout, plots, card.

Clean, build and ``laion-hf publish`` all go through :func:`publish_folder`: a
mapping config name -> shard directory, the reports about each directory (read
from beside the data unless the caller has them, as a build does), a card
family (inferred from the reports when not given, refused when they cannot
back it) and a context dict (recipe, models...) that the card renders.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from laion_hf.core.errors import UserError
from laion_hf.hub.card import render_card, write_card
from laion_hf.hub.evidence import ConfigEvidence, Threshold, choose_family, find_reports, gather
from laion_hf.hub.layout import DEFAULT_TARGET_SHARD_BYTES, Format, HubLayout, write_hub_folder
from laion_hf.hub.plots import UNKNOWN, profile, save_plots
from laion_hf.io.shards import discover_shards

T = TypeVar("T")


def publish_folder(
    sources: Mapping[str, str],
    folder: str | Path,
    *,
    family: str | None = None,
    context: Mapping[str, Any] | None = None,
    reports: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    format: Format = "webdataset",
    default: str | None = None,
    split: str = "train",
    include_images: bool = False,
    target_shard_bytes: int = DEFAULT_TARGET_SHARD_BYTES,
    plots: bool = True,
    template_dir: str | Path | None = None,
) -> HubLayout:
    """Write ``folder`` with every config's shards, distribution plots and README.md; returns the layout.

    ``reports``: config -> {report file name: parsed report}; by default each
    config's reports are found beside its shards (:func:`find_reports`). The
    family is checked against them before anything is written. Plots are
    drawn from the default config (the rows a user gets by default), with the
    reports' thresholds on them; YAML ``language`` comes from the data's
    language column when the context does not give it.
    """
    evidence = {
        name: gather(name, directory, reports[name] if reports is not None else find_reports(directory))
        for name, directory in sources.items()
    }
    family = choose_family(family, evidence.values())
    layout = write_hub_folder(
        sources,
        str(folder),
        format=format,
        split=split,
        default=default,
        target_shard_bytes=target_shard_bytes,
        include_images=include_images,
    )
    parquets = {name: [shard.parquet for shard in discover_shards(directory)] for name, directory in sources.items()}
    profiles = {name: profile(paths) for name, paths in parquets.items()}
    thresholds = _thresholds(evidence.values())
    saved = []
    if plots:
        saved = save_plots(parquets[layout.default], folder, config=layout.default, thresholds=thresholds, found=profiles[layout.default])
    languages: Counter[str] = Counter()
    for found in profiles.values():
        languages.update({code: n for code, n in found.languages.items() if code != UNKNOWN})
    derived: dict[str, Any] = {
        **evidence[layout.default].context,
        "evidence": evidence,
        "stages": _unique(stage for e in evidence.values() for stage in e.stages),
        "removal_lists": [_list_record(entry) for entry in _unique(entry for e in evidence.values() for entry in e.removal_lists)],
        "thresholds": {f"{t.scope}: {t.rule}": f"{t.value:g}" + (f" ({t.source})" if t.source else "") for t in thresholds},
        "language": [code for code, _ in languages.most_common()],
        "row_licenses": dict(profiles[layout.default].licenses),
    }
    card = render_card(family, {**derived, **(context or {})}, layout=layout, plots=saved, template_dir=template_dir)
    write_card(card, folder)
    return layout


def _unique(items: Iterable[T]) -> list[T]:
    """Items in first-seen order without repeats (configs of one build share its early stages)."""
    seen: list[T] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def _thresholds(evidence: Iterable[ConfigEvidence]) -> list[Threshold]:
    return _unique(t for e in evidence for step in e.steps for t in step.thresholds)


def _list_record(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A removal list as the card's table shows it: file name, values, and the file's sha256."""
    return {**entry, "path": Path(entry["path"]).name, "sha256": _file_sha256(entry["path"])}


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


def _file_sha256(path: str | None) -> str:
    """Checksum of a list file, so the card pins exactly which list was applied ("unavailable" if gone)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except (OSError, TypeError):
        return "unavailable"
