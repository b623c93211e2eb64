"""The dataset card of an OIG build, rendered through the shared card renderer (:mod:`laion_hf.hub.card`).

``cards/oig/oig.md`` arranges the sections; the YAML ``configs`` come from a
:class:`~laion_hf.hub.layout.HubLayout` describing each constituent and
``moderation``, plus the ``all`` config, which lists every constituent's file
instead of copying the data. The card holds no dates or timings, so it is part
of the byte-for-byte reproducible output.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from laion_hf.hub.card import CARDS_DIR, size_category
from laion_hf.hub.card import render_card as render_family_card
from laion_hf.hub.layout import ConfigLayout, HubLayout

if TYPE_CHECKING:
    from oig.build import BuildReport, ConstituentReport
    from oig.recipe import Recipe

CARD_DIR = CARDS_DIR / "oig"  # package data: cards/ is installed as laion_hf/cards
SPLIT = "train"


def layout_of(output: str, report: BuildReport) -> HubLayout:
    """The configs of a finished build (rows and bytes read back from the files), ``all`` first and default."""
    from oig.build import data_file

    configs = []
    for config in report.all_reports():
        path = Path(output) / data_file(config.name)
        rows = pq.ParquetFile(path).metadata.num_rows
        configs.append(ConfigLayout(config.name, SPLIT, [data_file(config.name)], rows, path.stat().st_size))
    members = [c for c in configs if c.name != "moderation"]
    everything = ConfigLayout(
        "all", SPLIT, [f for c in members for f in c.files], sum(c.num_rows for c in members), sum(c.num_bytes for c in members)
    )
    return HubLayout(folder=output, format="parquet", configs=[everything, *configs], default="all")


def render_card(recipe: Recipe, report: BuildReport, output: str) -> str:
    """The README.md text of a build."""
    layout = layout_of(output, report)
    card = recipe.card
    decontaminate = recipe.decontaminate or {}
    benchmarks = [str(b.get("path")) for b in decontaminate.get("benchmarks", [])]
    pii: dict[str, int] = {}
    for c in report.all_reports():
        for kind, count in c.pii.items():
            pii[kind] = pii.get(kind, 0) + count
    context = {
        "pretty_name": card.get("pretty_name", "OIG-style instructions"),
        "license": card.get("license", "other"),
        "language": card.get("language", ["en"]),
        "task_categories": ["text-generation"],
        "tags": ["oig", "instruction-tuning", "laion-hf"],
        "stages": [s.to_dict() | {"seconds": 0} for s in report.stage_totals()],
        "recipe_name": recipe.path.name,
        "seed": recipe.seed,
        "first_config": report.constituents[0].name,
        "constituents": [_view(c) for c in report.constituents],
        "constituents_and_moderation": [_view(c) for c in report.all_reports()],
        "total_rows_all": f"{layout.configs[0].num_rows:,}",
        "pii": ", ".join(f"{k}={v:,}" for k, v in sorted(pii.items()) if v),
        "dedup": "scope {scope}, Jaccard threshold {threshold}, {num_perm} permutations".format(
            **{"scope": "global", "threshold": 0.8, "num_perm": 128, **recipe.dedup}
        ),
        "decontamination": (
            f"{decontaminate.get('n', 13)}-gram overlap with {', '.join(benchmarks)}, "
            f"action `{decontaminate.get('action', 'drop')}`"
            if benchmarks
            else "none configured"
        ),
        "license_note": card.get("license_note", "The licence of each constituent follows its source; see the recipe."),
    }
    rendered = render_family_card("oig", context, layout=layout, template_dir=CARD_DIR)
    for entry in rendered.data.configs:
        if entry["config_name"] == "all":
            entry["data_files"] = [{"split": SPLIT, "path": layout.configs[0].files}]
    # the shared renderer sums every config; `all` repeats the constituents' rows
    rendered.data.size_categories = [size_category(sum(c.num_rows for c in layout.configs[1:]))]
    return str(rendered)


def _view(report: ConstituentReport) -> dict[str, Any]:
    from oig.build import STAGE_ORDER

    return {
        "name": report.name,
        "description": report.description,
        "records": f"{report.records:,}",
        "conversations": f"{report.conversations:,}",
        "kept": f"{report.kept:,}",
        "stage_list": [
            {
                "stage": s.stage,
                "rows_in": f"{s.rows_in:,}",
                "kept": f"{s.kept:,}",
                "reasons": ", ".join(f"{r}={n:,}" for r, n in sorted(s.dropped.items())),
            }
            for s in (report.stages[name] for name in STAGE_ORDER)
        ],
    }
