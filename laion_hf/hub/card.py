"""Dataset cards: a family template from ``cards/`` rendered through ``huggingface_hub.DatasetCard``.

A card has to be trusted, so its body is generated from the same numbers the
pipeline produced: the recipe, the models and their checksums, thresholds,
the code version, counts per stage and per removal reason, known issues, and
distribution plots. Templates (``cards/<family>.md``, Jinja) arrange those
sections; the tables are rendered here so every family shows them the same way.

Context keys every template may use (all optional except where noted):
``pretty_name``, ``summary``, ``license``, ``language`` (list),
``task_categories``, ``tags``, ``gated`` + ``gated_prompt`` + ``gated_fields``,
``recipe`` (mapping), ``models`` (list of ``{name, source, sha256}``),
``removal_lists`` (list of ``{kind, path, values, sha256}``),
``thresholds`` (mapping), ``code_version``, ``stages`` (list of
``StageStats.to_dict()``), ``report`` (a clean/build report dict: its
``total``/``shards`` become stages, its ``by_reason`` the removal table),
``known_issues`` (list of str), ``repo_id``. Other keys pass through to the template.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData

from laion_hf.errors import UserError
from laion_hf.hub.layout import HubLayout
from laion_hf.hub.plots import Plot

CARDS_DIR = Path(__file__).resolve().parents[2] / "cards"
SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
]


class CardError(UserError, ValueError):
    """A card cannot be rendered (unknown family, broken template)."""


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` bucket for a row count."""
    return next((label for limit, label in SIZE_CATEGORIES if rows < limit), "n>1T")


def code_version() -> str:
    """laion-hf's version and, in a git checkout, the commit (so a card names the exact code)."""
    from laion_hf import __version__

    try:
        commit = subprocess.run(
            ["git", "-C", str(CARDS_DIR.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"laion-hf {__version__}" + (f" (git {commit})" if commit else "")


def template_path(family: str, template_dir: str | Path | None = None) -> Path:
    """``DIR/<family>.md``, or ``DIR/<family>/<family>.md`` for a family that keeps its card in its own folder."""
    directory = Path(template_dir) if template_dir else CARDS_DIR
    for path in (directory / f"{family}.md", directory / family / f"{family}.md"):
        if path.is_file():
            return path
    known = sorted({p.stem for p in directory.glob("*.md")} | {p.stem for p in directory.glob("*/*.md")}) if directory.is_dir() else []
    raise CardError(f"{directory / f'{family}.md'}: no card template for family {family!r} (known: {', '.join(known) or 'none'})")


def render_card(
    family: str,
    context: Mapping[str, Any],
    *,
    layout: HubLayout | None = None,
    plots: Sequence[Plot] = (),
    template_dir: str | Path | None = None,
) -> DatasetCard:
    """Render ``cards/<family>.md`` with ``context`` (see module docstring) into a DatasetCard.

    With a ``layout`` the YAML gets its ``configs`` and ``dataset_info`` and
    the body a table of configs; ``plots`` are linked as images.
    """
    context = dict(context)
    stages = _stages(context)
    rows = sum(c.num_rows for c in layout.configs) if layout else (stages[-1]["kept"] if stages else 0)
    extra: dict[str, Any] = {}
    if layout is not None:
        extra.update(layout.card_data())
    if context.get("gated"):
        extra["extra_gated_prompt"] = context.get("gated_prompt") or "You agree to use this dataset for research only."
        extra["extra_gated_fields"] = context.get("gated_fields") or {"Affiliation": "text", "I agree to use it for research only": "checkbox"}
    card_data = DatasetCardData(
        pretty_name=context.get("pretty_name"),
        license=context.get("license"),
        language=context.get("language"),
        task_categories=context.get("task_categories", ["text-to-image", "image-to-text", "zero-shot-image-classification"]),
        tags=context.get("tags"),
        size_categories=[size_category(rows)],
        **extra,
    )
    sections = {
        "configs_table": _configs_table(layout) if layout else "",
        "stages_table": _stages_table(stages),
        "reasons_table": _reasons_table(_reasons(context, stages)),
        "models_table": _models_table(context.get("models") or []),
        "removal_lists_table": _removal_lists_table(context.get("removal_lists") or []),
        "thresholds_table": _mapping_table(context.get("thresholds") or {}, ("threshold", "value")),
        "recipe_table": _mapping_table(context.get("recipe") or {}, ("setting", "value")),
        "plots_md": "\n\n".join(f"![{p.title}]({p.path})" for p in plots),
        "known_issues_md": "\n".join(f"- {issue}" for issue in context.get("known_issues") or []),
        "load_example": _load_example(context.get("repo_id"), layout),
        "total_rows": f"{rows:,}",
    }
    template_kwargs = {"code_version": code_version(), **context, **sections}
    try:
        return DatasetCard.from_template(card_data, template_path=str(template_path(family, template_dir)), **template_kwargs)
    except CardError:
        raise
    except Exception as exc:  # jinja2 raises many types; the user needs the template's name
        raise CardError(f"{template_path(family, template_dir)}: cannot render ({type(exc).__name__}: {exc})") from exc


def _stages(context: Mapping[str, Any]) -> list[dict]:
    if context.get("stages"):
        return list(context["stages"])
    report = context.get("report") or {}
    if "stages" in report:
        return list(report["stages"])
    if "total" in report:
        return [{**report["total"], "stage": report["total"].get("stage") or "total"}]
    return []


def _reasons(context: Mapping[str, Any], stages: list[dict]) -> dict[str, int]:
    report = context.get("report") or {}
    if report.get("by_reason"):
        return dict(report["by_reason"])
    reasons: dict[str, int] = {}
    for stage in stages:
        for reason, count in (stage.get("dropped") or {}).items():
            reasons[reason] = reasons.get(reason, 0) + count
    return reasons


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _configs_table(layout: HubLayout) -> str:
    rows = [
        (f"`{c.name}`" + (" (default)" if c.name == layout.default else ""), c.split, f"{c.num_rows:,}", len(c.files), f"{c.num_bytes:,}")
        for c in layout.configs
    ]
    return _table(("config", "split", "rows", "files", "bytes"), rows)


def _stages_table(stages: list[dict]) -> str:
    if not stages:
        return "No stage counts were recorded."
    rows = []
    for s in stages:
        dropped = s.get("dropped") or {}
        removed = sum(dropped.values())
        rows.append((s.get("stage", "?"), f"{s.get('rows_in', 0):,}", f"{s.get('kept', 0):,}", f"{removed:,}"))
    return _table(("stage", "rows in", "kept", "removed"), rows)


def _reasons_table(reasons: Mapping[str, int]) -> str:
    if not reasons:
        return "No rows were removed."
    return _table(("removal reason", "rows"), [(f"`{r}`", f"{n:,}") for r, n in sorted(reasons.items(), key=lambda x: -x[1])])


def _models_table(models: Sequence[Mapping[str, Any]]) -> str:
    if not models:
        return "No models were used."
    return _table(("model", "source", "sha256"), [(m.get("name", "?"), m.get("source", "-"), f"`{m.get('sha256', '-')}`") for m in models])


def _removal_lists_table(lists: Sequence[Mapping[str, Any]]) -> str:
    if not lists:
        return "No removal lists were applied."
    rows = [(f"`{e.get('kind', '?')}`", e.get("path", "-"), f"{e.get('values', 0):,}", f"`{e.get('sha256', '-')}`") for e in lists]
    return _table(("list", "file", "values", "sha256"), rows)


def _mapping_table(mapping: Mapping[str, Any], header: tuple[str, str]) -> str:
    if not mapping:
        return "None."
    return _table(header, [(f"`{k}`", f"`{v}`") for k, v in mapping.items()])


def _load_example(repo_id: str | None, layout: HubLayout | None) -> str:
    config = layout.default if layout else None
    args = f'"{repo_id or "ORG/NAME"}"' + (f', "{config}"' if config else "")
    return f'from datasets import load_dataset\n\nds = load_dataset({args}, split="train", streaming=True)\nprint(next(iter(ds)))'


def write_card(card: DatasetCard, folder: str | Path) -> Path:
    """Save the card as ``folder/README.md`` (what the Hub and ``datasets`` read)."""
    path = Path(folder) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return path
