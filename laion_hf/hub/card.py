"""Dataset cards: a family template from ``cards/`` rendered into a ``huggingface_hub.DatasetCard``.

A card has to be trusted, so its body is generated from the same numbers the
pipeline produced: what the reports beside the data show was done (and what
the family's release did that they do not show), the recipe, the models and
their checksums, thresholds, the code version, rows per config, counts per
stage and per removal reason, licences, known issues, and distribution plots.
Templates (``cards/<family>.md``, Jinja; the LAION families extend
``cards/_base.md``) arrange those sections; the tables are rendered here so
every family shows them the same way. ``cards/`` is package data: the
repository's top-level folder is installed as ``laion_hf/cards`` (a symlink in
the source tree), so an installed wheel renders cards too.

Context keys every template may use (all optional):
``pretty_name``, ``summary``, ``license`` (the publisher's; ``unknown`` if
absent), ``language`` (list), ``task_categories``, ``tags``, ``gated`` +
``gated_prompt`` + ``gated_fields``, ``recipe`` (mapping), ``models`` (list of
``{name, source, sha256}``), ``removal_lists`` (list of ``{kind, path, values,
sha256}``), ``thresholds`` (mapping), ``code_version``, ``stages`` (list of
``StageStats.to_dict()``), ``report`` (a clean/build report dict: its
``total``/``shards`` become stages, its ``by_reason`` the removal table),
``evidence`` (config -> :class:`~laion_hf.hub.evidence.ConfigEvidence`),
``row_licenses`` (per-row licence -> rows), ``known_issues`` (list of str),
``repo_id``. Other keys pass through to the template.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import DatasetCard, DatasetCardData

from laion_hf.core.errors import UserError
from laion_hf.hub.evidence import FAMILIES, ConfigEvidence
from laion_hf.hub.layout import HubLayout
from laion_hf.hub.plots import Plot

CARDS_DIR = Path(str(files("laion_hf") / "cards"))
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
UNKNOWN_LICENSE = "unknown"
TOP_ROW_LICENSES = 10


class CardError(UserError, ValueError):
    """A card cannot be rendered (unknown family, broken template)."""


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` bucket for a row count."""
    return next((label for limit, label in SIZE_CATEGORIES if rows < limit), "n>1T")


def code_version() -> str:
    """laion-hf's version and, when it runs from a git checkout, the commit (so a card names the exact code)."""
    from laion_hf import __version__

    checkout = Path(__file__).resolve().parents[2]
    commit = ""
    if (checkout / ".git").exists():
        try:
            commit = subprocess.run(
                ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = ""
    return f"laion-hf {__version__}" + (f" (git {commit})" if commit else "")


def template_path(family: str, template_dir: str | Path | None = None) -> Path:
    """``DIR/<family>.md``, or ``DIR/<family>/<family>.md`` for a family that keeps its card in its own folder.

    Names starting with ``_`` are layouts the families extend, not families.
    """
    directory = Path(template_dir) if template_dir else CARDS_DIR
    if not family.startswith("_"):
        for path in (directory / f"{family}.md", directory / family / f"{family}.md"):
            if path.is_file():
                return path
    found = [*directory.glob("*.md"), *directory.glob("*/*.md")] if directory.is_dir() else []
    known = sorted({p.stem for p in found if not p.stem.startswith("_")})
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
    the body the rows of each config (never a sum: configs may overlap);
    ``plots`` are linked as images.
    """
    context = dict(context)
    stages = _stages(context)
    largest = max((c.num_rows for c in layout.configs), default=0) if layout else (stages[-1]["kept"] if stages else 0)
    extra: dict[str, Any] = {}
    if layout is not None:
        extra.update(layout.card_data())
    if context.get("gated"):
        extra["extra_gated_prompt"] = context.get("gated_prompt") or "You agree to use this dataset for research only."
        extra["extra_gated_fields"] = context.get("gated_fields") or {"Affiliation": "text", "I agree to use it for research only": "checkbox"}
    license = context.get("license") or UNKNOWN_LICENSE
    card_data = DatasetCardData(
        pretty_name=context.get("pretty_name"),
        license=license,
        language=context.get("language") or None,
        task_categories=context.get("task_categories", ["text-to-image", "image-to-text", "zero-shot-image-classification"]),
        tags=context.get("tags"),
        size_categories=[size_category(largest)],
        **extra,
    )
    evidence: Mapping[str, ConfigEvidence] = context.get("evidence") or {}
    sections = {
        "rows_md": _rows_md(layout) if layout else f"{largest:,} rows.",
        "evidence_md": _evidence_md(family, evidence, layout),
        "proven": sorted({key for e in evidence.values() for key in e.keys}),
        "configs_table": _configs_table(layout) if layout else "",
        "stages_table": _stages_table(stages),
        "reasons_table": _reasons_table(_reasons(context, stages)),
        "models_table": _models_table(context.get("models") or []),
        "removal_lists_table": _removal_lists_table(context.get("removal_lists") or []),
        "thresholds_table": _mapping_table(context.get("thresholds") or {}, ("threshold", "value")),
        "recipe_table": _mapping_table(context.get("recipe") or {}, ("setting", "value")),
        "license_md": _license_md(license, context.get("row_licenses") or {}),
        "plots_md": "\n\n".join(f"![{p.title}]({p.path})" for p in plots),
        "known_issues_md": "\n".join(f"- {issue}" for issue in context.get("known_issues") or []),
        "load_example": _load_example(context.get("repo_id"), layout),
        "layout_md": _layout_md(context.get("repo_id"), layout),
    }
    directory = Path(template_dir) if template_dir else CARDS_DIR
    path = template_path(family, directory)
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(directory)), keep_trailing_newline=True)
    # as DatasetCard.from_template renders, with a loader so that families can extend a shared layout
    variables = {**card_data.to_dict(), "code_version": code_version(), **context, **sections}
    try:
        template = environment.get_template(path.relative_to(directory).as_posix())
        return DatasetCard(template.render(card_data=card_data.to_yaml(), **variables))
    except Exception as exc:  # jinja2 raises many types; the user needs the template's name
        raise CardError(f"{path}: cannot render ({type(exc).__name__}: {exc})") from exc


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
    """Removed rows per reason; a config's own stage (``"<config>: ..."``) prefixes its reasons, as configs overlap."""
    report = context.get("report") or {}
    if report.get("by_reason"):
        return dict(report["by_reason"])
    reasons: dict[str, int] = {}
    for stage in stages:
        name = stage.get("stage", "")
        prefix = name.split(": ", 1)[0] + ": " if ": " in name else ""
        for reason, count in (stage.get("dropped") or {}).items():
            reasons[prefix + reason] = reasons.get(prefix + reason, 0) + count
    return reasons


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _config_label(layout: HubLayout | None, name: str) -> str:
    rows = next((c.num_rows for c in layout.configs if c.name == name), None) if layout else None
    default = " (default)" if layout and name == layout.default else ""
    return f"`{name}`{default}" + (f", {rows:,} rows" if rows is not None else "")


def _rows_md(layout: HubLayout) -> str:
    """Rows per config, never summed: variants of one dataset overlap."""
    parts = [_config_label(layout, c.name) for c in layout.configs]
    if len(parts) == 1:
        return f"{layout.configs[0].num_rows:,} rows."
    return "Rows per config (each counted on its own; configs may overlap): " + "; ".join(parts) + "."


def _evidence_md(family: str, evidence: Mapping[str, ConfigEvidence], layout: HubLayout | None) -> str:
    """What the reports show was done, steps common to every config once, then each config's own."""
    if not evidence or not any(e.reports for e in evidence.values()):
        shown = "No laion-hf report was found beside the data, so this card claims no processing step."
    else:
        reports = sorted({r for e in evidence.values() for r in e.reports})
        configs = list(evidence.values())
        common = [s for s in configs[0].steps if all(s in e.steps for e in configs[1:])] if len(configs) > 1 else []
        blocks = [f"From the reports beside the data ({', '.join(f'`{r}`' for r in reports)}); nothing else is claimed."]
        if common:
            blocks.append("Every config:\n\n" + "\n".join(f"- {s.text}" for s in common))
        for e in configs:
            own = [s for s in e.steps if s not in common]
            body = "\n".join(f"- {s.text}" for s in own) if own else "- no processing step is recorded for this config"
            blocks.append(f"{_config_label(layout, e.name)}:\n\n{body}")
        shown = "\n\n".join(blocks)
    rule = FAMILIES.get(family)
    present = {key for e in evidence.values() for key in e.keys}
    missing = [text for key, text in (rule.defining.items() if rule else []) if key not in present]
    if missing:
        shown += (
            f"\n\nNot shown by the reports, so not claimed for this copy (the {family} release has these steps):\n\n"
            + "\n".join(f"- {text}" for text in missing)
        )
    return shown


def _license_md(license: str, row_licenses: Mapping[str, int]) -> str:
    if license == UNKNOWN_LICENSE:
        text = "Not stated: the publisher gave no licence (`laion-hf publish --license ID`), so the YAML says `unknown`."
    else:
        text = f"`{license}`, as stated by the publisher."
    text += " The images remain their owners' property."
    if row_licenses:
        top = sorted(row_licenses.items(), key=lambda x: (-x[1], x[0]))
        shown = ", ".join(f"`{value}` {count:,}" for value, count in top[:TOP_ROW_LICENSES])
        more = f", and {len(top) - TOP_ROW_LICENSES} other values" if len(top) > TOP_ROW_LICENSES else ""
        text += f"\n\nPer-row licences (the Creative Commons link found on the image's page; `?` when there was none): {shown}{more}."
    return text


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
        return "No removed rows are recorded in the reports."
    return _table(("removal reason", "rows"), [(f"`{r}`", f"{n:,}") for r, n in sorted(reasons.items(), key=lambda x: -x[1])])


def _models_table(models: Sequence[Mapping[str, Any]]) -> str:
    if not models:
        return "No model is recorded in the reports."
    return _table(("model", "source", "sha256"), [(m.get("name", "?"), m.get("source", "-"), f"`{m.get('sha256', '-')}`") for m in models])


def _removal_lists_table(lists: Sequence[Mapping[str, Any]]) -> str:
    if not lists:
        return "No removal list is recorded in the reports."
    rows = [
        (f"`{e.get('kind', '?')}`", e.get("path", "-"), "-" if e.get("values") is None else f"{e['values']:,}", f"`{e.get('sha256', '-')}`")
        for e in lists
    ]
    return _table(("list", "file", "values", "sha256"), rows)


def _mapping_table(mapping: Mapping[str, Any], header: tuple[str, str]) -> str:
    if not mapping:
        return "None recorded in the reports."
    return _table(header, [(f"`{k}`", f"`{v}`") for k, v in mapping.items()])


def _load_example(repo_id: str | None, layout: HubLayout | None) -> str:
    config = layout.default if layout else None
    args = f'"{repo_id or "ORG/NAME"}"' + (f', "{config}"' if config else "")
    return f'from datasets import load_dataset\n\nds = load_dataset({args}, split="train", streaming=True)\nprint(next(iter(ds)))'


def _layout_md(repo_id: str | None, layout: HubLayout | None) -> str:
    """Which layout this repo is and who it suits: Parquet with images for ``load_dataset``, tars for ``webdataset``.

    ``datasets`` streams Parquet through its Arrow path and a WebDataset repo
    example by example: 2.4x (images decoded) to 5x (as bytes) slower (docs/benchmarks.md, "stream").
    """
    if layout is None or not layout.configs:
        return ""
    if layout.format == "webdataset":
        config = next((c for c in layout.configs if c.name == layout.default), layout.configs[0])
        shards = len(config.files)
        numbers = f"{{00000..{shards - 1:05d}}}" if shards > 1 else "00000"  # brace expansion, as webdataset reads it
        pattern = f"{config.name}/{config.split}-{numbers}-of-{shards:05d}.tar"
        url = f"https://huggingface.co/datasets/{repo_id or 'ORG/NAME'}/resolve/main/{pattern}"
        return (
            "This repo is WebDataset tars (`KEY.jpg|png|webp`, `.txt`, `.json` per sample, as img2dataset writes "
            "them): the layout for the `webdataset` library and img2dataset tooling.\n\n"
            f"```python\nimport webdataset as wds\n\nds = wds.WebDataset(\"{url}\").decode(\"pil\")"
            f".to_tuple(\"jpg;png;webp\", \"txt\")\n```\n\n"
            "`load_dataset` reads it as well, but streams tars example by example: for `datasets` users the "
            "same samples published as Parquet with the image bytes (`laion-hf publish --format parquet "
            "--include-images`) stream 2-5x faster."
        )
    if any(c.features and "image" in c.features for c in layout.configs):
        return (
            "This repo is Parquet with the image bytes in an `image` column: the fastest layout for "
            "`load_dataset`, streamed or not. For the `webdataset` library and img2dataset tooling the same "
            "samples are published as WebDataset tars (`laion-hf publish --format webdataset`)."
        )
    return (
        "This repo is Parquet metadata (one row per sample: URL, caption, scores) without images: read it with "
        "`load_dataset`, DuckDB or pyarrow, and fetch the images with `laion-hf download` or img2dataset."
    )


def write_card(card: DatasetCard, folder: str | Path) -> Path:
    """Save the card as ``folder/README.md`` (what the Hub and ``datasets`` read)."""
    path = Path(folder) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return path
