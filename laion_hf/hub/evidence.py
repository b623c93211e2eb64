"""What the reports beside published data prove: the only source of a card's claims.

laion-hf writes a report beside everything it makes (``build_report.json``,
``clean_report.json``, ``download_report.json``, ``dedup_report.json``). A card
states what those reports show and nothing more: each report becomes
:class:`Step` statements carrying its numbers (and the thresholds the plots
draw), a family's defining steps are either shown or listed as not applied,
and the family itself is inferred from the reports when the user does not name
it (a build names its recipe's card; ``clean`` is the Re-LAION migration). A
family whose claims the reports cannot back is refused (:func:`choose_family`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from laion_hf.core.errors import UserError
from laion_hf.download.options import is_opt_out
from laion_hf.io.removal_lists import KINDS as LIST_KINDS

BUILD_REPORT = "build_report.json"
CLEAN_REPORT = "clean_report.json"
DOWNLOAD_REPORT = "download_report.json"
DEDUP_REPORT = "dedup_report.json"
#: A build's config directories sit at OUTPUT/stages/NN-configs/NAME, three levels below its report.
BUILD_REPORT_LEVELS = 3
#: How far ``clean_report.json``'s ``input`` links are followed back (clean of a clean of a download...).
MAX_INPUT_HOPS = 4

# What a step is, as the cards and the family rules name it.
DEMO_RECIPE = "demo-recipe"
EXTRACT = "extract"
DOWNLOAD = "download"
CLIP_FILTER = "clip-filter"
LANGUAGE = "language"
SCORES = "scores"
NSFW_TAG = "nsfw-tag"
DEDUP = "dedup"
REMOVAL_LISTS = "removal-lists"  # rows removed by lists of what to remove, or by a reference of what to keep
PUNSAFE_LIMIT = "punsafe-limit"
KEYWORD_FILTER = "keyword-filter"


@dataclass(frozen=True)
class Threshold:
    """A limit a step applied to a column (drawn on that column's plot): rows kept at >= or removed above."""

    column: str
    value: float
    scope: str  # who applied it: "filter", "score", or a config's name
    keeps: bool = False  # True: rows at or above were kept; False: rows strictly above were removed
    source: str = ""  # where the value came from, when not the recipe itself (a calibration file)

    @property
    def rule(self) -> str:
        return f"{self.column} {'>=' if self.keeps else '>'}"

    @property
    def label(self) -> str:
        return f"{self.scope}: {'kept at >=' if self.keeps else 'removed above'} {self.value:g}"


@dataclass(frozen=True)
class Step:
    """One thing a report shows was done to the data, as the card states it."""

    key: str
    text: str
    thresholds: tuple[Threshold, ...] = ()


@dataclass
class ConfigEvidence:
    """What the reports of one config's directory show."""

    name: str
    directory: str
    reports: list[str] = field(default_factory=list)  # file names, in the order they were read
    steps: list[Step] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)  # StageStats dicts for the stage table
    removal_lists: list[dict[str, Any]] = field(default_factory=list)  # {kind, path[, values]} of every list applied
    context: dict[str, Any] = field(default_factory=dict)  # card context a report describes (a build's recipe, models)
    family: str | None = None  # the family the reports name (a build's card, "relaion5b" for a clean)

    @property
    def keys(self) -> set[str]:
        return {step.key for step in self.steps}


@dataclass(frozen=True)
class FamilyRule:
    """What a card family claims: steps it cannot go without, and the steps of the release it describes."""

    requires_any: frozenset[str] = frozenset()
    refusal: str = ""
    defining: Mapping[str, str] = field(default_factory=dict)


FAMILIES: dict[str, FamilyRule] = {
    "demo": FamilyRule(
        frozenset({DEMO_RECIPE}),
        "the demo card describes data built by the demo recipe (tiny models of the synthetic domain), "
        "and no build report of the demo recipe is beside it",
    ),
    "relaion5b": FamilyRule(
        frozenset({REMOVAL_LISTS, PUNSAFE_LIMIT, KEYWORD_FILTER}),
        "the reports beside it show no Re-LAION-5B cleaning (removal lists or reference, punsafe limit, keyword filter): "
        "clean it first (laion-hf clean) or publish it as laion5b",
        {
            REMOVAL_LISTS: "links matched by the partners' hash lists (IWF, C3P, Stanford Internet Observatory) "
            "and links reported by Human Rights Watch removed",
            PUNSAFE_LIMIT: "rows above the variant's punsafe limit removed (research 0.95, research-safe 0.45)",
            KEYWORD_FILTER: "captions matching LAION's keyword filter removed",
        },
    ),
    "laion5b": FamilyRule(
        defining={
            CLIP_FILTER: "CLIP ViT-B/32 image-text similarity >= 0.28 (English), multilingual CLIP >= 0.26 (other languages)",
            SCORES: "punsafe and pwatermark scores",
        },
    ),
    "laion400m": FamilyRule(
        defining={
            CLIP_FILTER: "CLIP ViT-B/32 image-text similarity >= 0.3",
            LANGUAGE: "English captions only",
            NSFW_TAG: "NSFW tag (UNLIKELY / UNSURE / NSFW) from punsafe",
        },
    ),
}


# -- finding the reports ---------------------------------------------------------------------------


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read this report ({exc})") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: a report must be a JSON object")
    return data


def _beside(directory: Path) -> list[Path]:
    """``*_report.json`` in the directory or in a hidden bookkeeping folder of it."""
    return sorted(directory.glob("*_report.json")) + sorted(directory.glob(".*/*_report.json"))


def _build_report_above(directory: Path) -> Path | None:
    """The build report of the build that made ``directory`` (its ``configs`` must name this directory)."""
    for parent in list(directory.parents)[:BUILD_REPORT_LEVELS]:
        path = parent / BUILD_REPORT
        if path.is_file():
            configs = _read(path).get("configs") or {}
            if any(Path(c.get("dir", "")).resolve() == directory for c in configs.values()):
                return path
    return None


def find_reports(directory: str | Path) -> dict[str, dict[str, Any]]:
    """Every report about the data in ``directory``, earliest first: path -> parsed JSON.

    Reports beside the data (or in a hidden folder of it), the reports of the
    directory a ``clean_report.json`` names as its input, and the build report
    of the build whose config this directory is.
    """
    directory = Path(directory).resolve()
    found: dict[str, dict[str, Any]] = {}
    chain, current = [], directory
    for _ in range(MAX_INPUT_HOPS + 1):
        reports = {str(p): _read(p) for p in _beside(current)}
        chain.append(reports)
        clean = next((r for p, r in reports.items() if Path(p).name == CLEAN_REPORT), None)
        source = Path(clean["input"]).resolve() if clean and clean.get("input") else None
        if source is None or source == current or not source.is_dir():
            break
        current = source
    for reports in reversed(chain):
        found.update(reports)
    build = _build_report_above(directory)
    if build is not None:
        found[str(build)] = _read(build)
    return found


# -- reading them ---------------------------------------------------------------------------------


def gather(name: str, directory: str, reports: Mapping[str, Mapping[str, Any]]) -> ConfigEvidence:
    """The evidence of config ``name`` from its reports (path or file name -> parsed report)."""
    evidence = ConfigEvidence(name, directory)
    for path, report in reports.items():
        kind = Path(path).name
        evidence.reports.append(kind)
        if kind == BUILD_REPORT:
            _from_build(evidence, report)
        elif kind == CLEAN_REPORT:
            _from_clean(evidence, report)
        elif kind == DOWNLOAD_REPORT:
            evidence.stages.append(_stats(report, "download"))
            evidence.steps.append(_download_step(report))
        elif kind == DEDUP_REPORT:
            evidence.stages.append(_stats(report, "dedup"))
            evidence.steps.append(_dedup_step(report, report.get("max_distance")))
        elif isinstance(report.get("total"), Mapping):  # another laion-hf report: its counts, no claim
            evidence.stages.append(_stats(report["total"], kind.removesuffix("_report.json")))
    return evidence


def _stats(stats: Mapping[str, Any], stage: str) -> dict[str, Any]:
    return {"stage": stage, "rows_in": stats.get("rows_in", 0), "kept": stats.get("kept", 0), "dropped": dict(stats.get("dropped") or {})}


def _removed(stats: Mapping[str, Any]) -> int:
    return sum((stats.get("dropped") or {}).values())


def _rows(count: int) -> str:
    return f"{count:,} row{'' if count == 1 else 's'}"


def _reasons(dropped: Mapping[str, int]) -> str:
    return ", ".join(f"{reason} {count:,}" for reason, count in sorted(dropped.items(), key=lambda x: (-x[1], x[0])))


def _download_step(stats: Mapping[str, Any]) -> Step:
    rows, kept = stats.get("rows_in", 0), stats.get("kept", 0)
    share = f" ({kept / rows:.1%})" if rows else ""
    dropped = stats.get("dropped") or {}
    opted_out = {reason: n for reason, n in dropped.items() if is_opt_out(reason)}
    failed = {reason: n for reason, n in dropped.items() if reason not in opted_out}
    return Step(DOWNLOAD, f"downloaded: {kept:,} of {rows:,} images saved{share}"
                + (f"; opted out by their sites: {_reasons(opted_out)}" if opted_out else "")
                + (f"; failed: {_reasons(failed)}" if failed else ""))


def _dedup_step(stats: Mapping[str, Any], max_distance: Any) -> Step:
    near = f"; images within {max_distance} pHash bits count as duplicates" if max_distance is not None else ""
    return Step(DEDUP, f"duplicates removed: {_removed(stats):,} of {stats.get('rows_in', 0):,} ({_reasons(stats.get('dropped') or {}) or 'none found'}){near}")


def _list_step(lists: Sequence[tuple[str, str, str]], dropped: Mapping[str, int], how: str = "") -> Step:
    """``lists``: (kind, file name, detail) of every list applied; counts from the stage's reasons."""
    parts = [f"`{kind}` {name}{detail}: {_rows(dropped.get(kind, 0))} removed" for kind, name, detail in lists]
    return Step(REMOVAL_LISTS, "removal lists applied: " + "; ".join(parts) + how)


def _punsafe_step(config: str, limit: float, removed: int, how: str = "") -> Step:
    return Step(
        PUNSAFE_LIMIT,
        f"rows with punsafe > {limit} removed: {removed:,}{how}",
        (Threshold("punsafe", float(limit), config),),
    )


def _keyword_step(path: str, removed: int) -> Step:
    return Step(KEYWORD_FILTER, f"keyword filter ({Path(path).name}): {_rows(removed)} removed")


def _from_clean(evidence: ConfigEvidence, report: Mapping[str, Any]) -> None:
    from laion_hf.stages.removal import resolve_threshold

    options = report.get("options") or {}
    total = report.get("total") or {}
    dropped = report.get("by_reason") or total.get("dropped") or {}
    evidence.family = "relaion5b"
    evidence.stages.append(_stats(total, f"{evidence.name}: clean"))
    lists = report.get("removal_lists") or []
    if lists:
        sources = report.get("image_hash_source") or {}
        how = "".join(f"; image {alg} compared with {' and '.join(found)}" for alg, found in sorted(sources.items()))
        detail = [(e.get("kind", "?"), Path(e.get("path") or "?").name, f" ({e.get('values', 0):,} values)") for e in lists]
        evidence.steps.append(_list_step(detail, dropped, how))
        evidence.removal_lists.extend({"kind": e.get("kind"), "path": e.get("path"), "values": e.get("values")} for e in lists)
    limit = resolve_threshold(options.get("variant"), options.get("punsafe_threshold"))
    if limit is not None:
        how = f" (scores of the metadata at {options['metadata']}, matched by LAION hash)" if options.get("metadata") else ""
        evidence.steps.append(_punsafe_step(evidence.name, limit, dropped.get("punsafe", 0), how))
    if options.get("keyword_file"):
        evidence.steps.append(_keyword_step(options["keyword_file"], dropped.get("keyword", 0)))
    if options.get("keep_reference"):
        evidence.steps.append(
            Step(REMOVAL_LISTS, f"rows absent from the reference {options['keep_reference']} removed: {dropped.get('not-in-reference', 0):,}")
        )


def _model(recipe: Mapping[str, Any], ref: str | None) -> str:
    return ((recipe.get("models") or {}).get(ref) or {}).get("name") or str(ref)


def _from_build(evidence: ConfigEvidence, report: Mapping[str, Any]) -> None:
    """A build's shared steps (only those that ran, per its stage counts) and this config's own."""
    recipe = report.get("recipe") or {}
    steps = recipe.get("steps") or {}
    configs = {c.get("name"): c for c in recipe.get("configs") or []}
    built = next((n for n, c in (report.get("configs") or {}).items() if Path(c.get("dir", "")).resolve() == Path(evidence.directory).resolve()), None)
    config = built or evidence.name
    stages = {}
    for stats in report.get("stages") or []:
        owner = stats["stage"].split(": ", 1)[0] if ": " in stats["stage"] else None
        if owner not in configs or owner == config:
            stages[stats["stage"]] = stats
            evidence.stages.append(_stats(stats, stats["stage"]))
    evidence.family = recipe.get("card") or evidence.family
    evidence.context.update(_build_context(report))
    if recipe.get("card") == "demo":
        evidence.steps.append(
            Step(DEMO_RECIPE, f"built by laion-hf's demo recipe ({recipe.get('name')} {recipe.get('version')}): tiny models "
                 "trained on laion-hf's synthetic image/caption domain stand in for LAION's")
        )
    if "extract" in stages:
        s = stages["extract"]
        evidence.steps.append(Step(EXTRACT, f"extracted from WAT files: {s['rows_in']:,} image links, {s['kept']:,} kept ({_reasons(s['dropped']) or 'none dropped'})"))
    if "download" in stages:
        evidence.steps.append(_download_step(stages["download"]))
    spec = steps.get("filter") or {}
    if spec and "clip-filter" in stages:
        evidence.steps.append(_filter_step(recipe, spec, stages["clip-filter"]))
    if spec.get("languages") and "language" in stages:
        evidence.steps.append(Step(LANGUAGE, f"captions kept only in {', '.join(spec['languages'])}: {_rows(_removed(stages['language']))} removed"))
    score = steps.get("score") or {}
    if score and "score" in stages:
        evidence.steps.append(_score_step(recipe, score, stages))
    if score.get("nsfw_tag") and "nsfw-tag" in stages:
        tag = score["nsfw_tag"]
        evidence.steps.append(Step(NSFW_TAG, f"NSFW tag from punsafe: UNSURE from {tag['unsure_at']}, NSFW from {tag['nsfw_at']}"))
    if "dedup" in stages:
        evidence.steps.append(_dedup_step(stages["dedup"], (steps.get("dedup") or {}).get("near_duplicate_max_distance")))
    own = configs.get(config)
    removal = stages.get(f"{config}: removal")
    if own and removal:
        dropped = removal.get("dropped") or {}
        applied = [(r["kind"], r["file"]) for r in own.get("remove") or []] + [tuple(r) for r in report.get("removals") or []]
        named = {kind for kind, _ in applied}
        applied += [(kind, "(file not recorded)") for kind in sorted(dropped) if kind in LIST_KINDS and kind not in named]
        if applied:
            evidence.steps.append(_list_step([(kind, Path(path).name, "") for kind, path in applied], dropped))
            evidence.removal_lists.extend({"kind": kind, "path": path} for kind, path in applied)
        if own.get("punsafe_above") is not None:
            evidence.steps.append(_punsafe_step(config, own["punsafe_above"], dropped.get("punsafe", 0)))
        if own.get("keyword_file"):
            evidence.steps.append(_keyword_step(own["keyword_file"], dropped.get("keyword", 0)))
    subset = stages.get(f"{config}: subset")
    if own and subset:
        rule = []
        if own.get("language_in"):
            rule.append(f"language in {', '.join(own['language_in'])}")
        if own.get("language_not_in"):
            rule.append(f"language not in {', '.join(own['language_not_in'])}")
        if own.get("language_detected") is not None:
            rule.append("a detected language" if own["language_detected"] else "no detected language")
        evidence.steps.append(Step(LANGUAGE, f"subset of rows with {' and '.join(rule)}: {subset['kept']:,} of {subset['rows_in']:,}"))


def _build_context(report: Mapping[str, Any]) -> dict[str, Any]:
    """The card's title, summary, recipe table and models, as the build report records them."""
    recipe = report.get("recipe") or {}
    sources = "; ".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in (recipe.get("source") or {}).items())
    return {
        "pretty_name": f"{recipe.get('name')} (laion-hf build)",
        "summary": f"{recipe.get('description', '')}\n\nSource: {sources}",
        "recipe": {
            "recipe": f"{recipe.get('name')} {recipe.get('version')}",
            "file": Path(recipe.get("path") or "?").name,
            "steps": " -> ".join([*(recipe.get("steps") or {}), "configs"]),
            "configs": ", ".join(c.get("name", "?") for c in recipe.get("configs") or []),
            "runner": report.get("runner", "local"),
        },
        "models": list(report.get("models") or []),
    }


def _filter_step(recipe: Mapping[str, Any], spec: Mapping[str, Any], stats: Mapping[str, Any]) -> Step:
    english = spec["threshold"]
    text = f"CLIP filter ({_model(recipe, spec.get('model'))}): image-text cosine similarity >= {english['value']} ({english['source']})"
    lines = [Threshold("similarity", float(english["value"]), "filter", keeps=True, source=english.get("source", ""))]
    other = spec.get("multilingual_threshold")
    if other:
        text += f"; captions not in {spec.get('english_language', 'en')} with {_model(recipe, spec.get('multilingual_model'))} >= {other['value']} ({other['source']})"
        lines.append(Threshold("similarity", float(other["value"]), "filter (other languages)", keeps=True, source=other.get("source", "")))
    return Step(CLIP_FILTER, f"{text}; {_removed(stats):,} of {_rows(stats['rows_in'])} removed", tuple(lines))


def _score_step(recipe: Mapping[str, Any], score: Mapping[str, Any], stages: Mapping[str, Mapping[str, Any]]) -> Step:
    heads = ", ".join(f"{column} ({_model(recipe, ref)})" for column, ref in sorted((score.get("heads") or {}).items()))
    text = f"scores computed: {heads}"
    limits = score.get("drop_above") or {}
    if limits:
        removed = _removed(stages.get("thresholds") or {})
        text += f"; rows removed above {', '.join(f'{c} {v}' for c, v in limits.items())}: {removed:,}"
    return Step(SCORES, text, tuple(Threshold(c, float(v), "score") for c, v in limits.items()))


# -- what the family may claim --------------------------------------------------------------------


def choose_family(requested: str | None, evidence: Iterable[ConfigEvidence]) -> str:
    """The card family: the one asked for if the reports back its claims, else the one they name.

    Raises a UserError (exit 2) when the reports name another family, name
    none and none was asked for, or cannot back what the family claims.
    """
    evidence = list(evidence)
    named = sorted({e.family for e in evidence if e.family})
    where = ", ".join(f"{e.name}: {', '.join(e.reports) or 'no report'}" for e in evidence)
    if len(named) > 1:
        raise UserError(f"the reports beside the configs name different families ({', '.join(named)}; {where}): publish them separately")
    if requested is None:
        if not named:
            raise UserError(
                f"no report beside the data names its family ({where}): pass --family laion400m, laion5b or relaion5b; "
                "the card then states only what the reports show"
            )
        requested = named[0]
    elif named and named[0] != requested:
        raise UserError(f"--family {requested}: the reports say this data is {named[0]} ({where}); its card would claim otherwise")
    rule = FAMILIES.get(requested)
    if rule and rule.requires_any and not any(rule.requires_any & e.keys for e in evidence):
        raise UserError(f"--family {requested}: {rule.refusal} ({where})")
    return requested
