"""The dataset card of an OIG build: YAML ``configs`` (each constituent, ``all``, ``moderation``) + counts.

The ``all`` config lists every constituent's file instead of copying the data.
The card holds only deterministic content (no dates, no timings), so it is part
of the byte-for-byte reproducible output.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined

if TYPE_CHECKING:
    from oig.build import BuildReport
    from oig.recipe import Recipe

CARD_DIR = Path(__file__).resolve().parents[1] / "cards" / "oig"
TEMPLATE = "README.md.j2"


def configs_yaml(report: BuildReport) -> list[dict[str, Any]]:
    """The README ``configs:`` list: ``all`` (default) over every constituent file, then one per config."""
    from oig.build import data_file

    files = [data_file(c.name) for c in report.constituents]
    configs: list[dict[str, Any]] = [
        {"config_name": "all", "default": True, "data_files": [{"split": "train", "path": files}]}
    ]
    for report_of in report.all_reports():
        configs.append({"config_name": report_of.name, "data_files": [{"split": "train", "path": data_file(report_of.name)}]})
    return configs


def render_card(recipe: Recipe, report: BuildReport) -> str:
    """The README.md text of a build."""
    card = recipe.card
    header = {
        "pretty_name": card.get("pretty_name", "OIG-style instructions"),
        "license": card.get("license", "other"),
        "language": card.get("language", ["en"]),
        "task_categories": ["text-generation"],
        "tags": ["oig", "instruction-tuning", "laion-hf"],
        "configs": configs_yaml(report),
    }
    constituents = [_view(c) for c in report.constituents]
    everything = [_view(c) for c in report.all_reports()]
    pii: dict[str, int] = {}
    for c in report.all_reports():
        for kind, count in c.pii.items():
            pii[kind] = pii.get(kind, 0) + count
    dedup = recipe.dedup
    decontaminate = recipe.decontaminate or {}
    benchmarks = [str(b.get("path")) for b in decontaminate.get("benchmarks", [])]
    env = Environment(loader=FileSystemLoader(CARD_DIR), undefined=StrictUndefined, keep_trailing_newline=True)
    return env.get_template(TEMPLATE).render(
        yaml_header=yaml.safe_dump(header, sort_keys=False, allow_unicode=True),
        pretty_name=header["pretty_name"],
        recipe_name=recipe.path.name,
        seed=recipe.seed,
        first_config=report.constituents[0].name,
        constituents=constituents,
        constituents_and_moderation=everything,
        total_kept=sum(c.kept for c in report.constituents),
        pii=", ".join(f"{k}={v:,}" for k, v in sorted(pii.items()) if v),
        dedup=f"scope {dedup.get('scope', 'global')}, Jaccard threshold {dedup.get('threshold', 0.8)}, "
        f"{dedup.get('num_perm', 128)} permutations",
        decontamination=f"{decontaminate.get('n', 13)}-gram overlap with {', '.join(benchmarks)}, action "
        f"`{decontaminate.get('action', 'drop')}`" if benchmarks else "none configured",
        license_note=card.get("license_note", "The licence of each constituent follows its source; see the recipe."),
    )


def _view(report: Any) -> dict[str, Any]:
    stages = [report.stages[name] for name in ("pii", "quality", "decontaminate", "dedup")]
    return {
        "name": report.name,
        "description": report.description,
        "records": report.records,
        "conversations": report.conversations,
        "kept": report.kept,
        "stage_list": [
            {
                "stage": s.stage,
                "rows_in": s.rows_in,
                "kept": s.kept,
                "reasons": ", ".join(f"{r}={n:,}" for r, n in sorted(s.dropped.items())),
            }
            for s in stages
        ],
    }
