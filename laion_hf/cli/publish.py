"""``laion-hf publish`` (Hub-ready folder with card) and ``laion-hf push`` (to the Hub or a folder / object store)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.table import Table

from laion_hf.cli.app import app, check_output_dir, console
from laion_hf.core.errors import UserError


def _parse_configs(specs: list[str]) -> dict[str, str]:
    sources = {}
    for spec in specs:
        name, sep, directory = spec.partition("=")
        if not sep or not name or not directory:
            raise UserError(f"--config {spec!r}: expected NAME=DIR")
        sources[name] = directory
    return sources


def _read_context(path: Optional[str]) -> dict:
    if path is None:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
        context = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot read card context ({exc})") from exc
    if not isinstance(context, dict):
        raise UserError(f"{path}: card context must be a mapping of keys to values")
    return context


@app.command("publish")
def publish_command(
    output: Optional[str] = typer.Argument(None, metavar="OUTPUT", help="A laion-hf output: shard subdirectories become configs (or the directory itself is 'default')."),
    folder: str = typer.Option(..., "--folder", "-o", help="Where to write the Hub-ready folder."),
    family: Optional[str] = typer.Option(
        None, "--family", help="Card family: laion400m, laion5b, relaion5b, demo. Default: the one the reports beside the data name "
        "(a build's recipe; relaion5b for `clean` output); refused when the reports cannot back its claims.",
    ),
    license: Optional[str] = typer.Option(None, "--license", help="The dataset's licence as a Hub licence id (e.g. cc-by-4.0). Default: unknown."),
    config: list[str] = typer.Option([], "--config", help="NAME=DIR, repeatable; instead of OUTPUT."),
    format: str = typer.Option("webdataset", "--format", help="webdataset (tars with images) or parquet (metadata)."),
    include_images: bool = typer.Option(False, "--include-images", help="Parquet only: add the image bytes as an 'image' column."),
    default: Optional[str] = typer.Option(None, "--default", help="The default config (first one otherwise)."),
    context: Optional[str] = typer.Option(None, "--context", help="YAML/JSON card context: license, language, recipe, models, thresholds, known_issues, gated..."),
    repo_id: Optional[str] = typer.Option(None, "--repo-id", help="Shown in the card's loading example."),
    target_shard_mb: int = typer.Option(1000, "--target-shard-mb", min=1, help="Size of output shards (inputs are packed, never split)."),
) -> None:
    """Lay out shards for the Hub, plot distributions and write the dataset card (README.md)."""
    check_output_dir(folder)
    from laion_hf.hub.publish import discover_sources, publish_folder

    if format not in ("webdataset", "parquet"):
        raise UserError(f"--format {format!r}: use webdataset or parquet")
    sources = _parse_configs(config) if config else discover_sources(output) if output else None
    if not sources:
        raise UserError("give OUTPUT or at least one --config NAME=DIR")
    card_context = _read_context(context)
    if license:
        card_context["license"] = license
    if repo_id:
        card_context["repo_id"] = repo_id
    layout = publish_folder(
        sources, folder, family=family, context=card_context, format=format, default=default,
        include_images=include_images, target_shard_bytes=target_shard_mb * 1000**2,
    )
    table = Table(title=f"Hub folder {folder} ({format})")
    for column in ("config", "rows", "files", "bytes"):
        table.add_column(column, justify="left" if column == "config" else "right")
    for entry in layout.configs:
        name = entry.name + (" (default)" if entry.name == layout.default else "")
        table.add_row(name, f"{entry.num_rows:,}", str(len(entry.files)), f"{entry.num_bytes:,}")
    console.print(table)
    console.print(f"card: {Path(folder) / 'README.md'}; next: laion-hf push {folder} ORG/NAME")


@app.command("push")
def push_command(
    folder: str = typer.Argument(..., metavar="FOLDER", help="A folder written by `laion-hf publish`."),
    repo_id: Optional[str] = typer.Argument(None, metavar="REPO_ID", help="ORG/NAME on the Hub (HF_ENDPOINT selects the server)."),
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch to push to (created if missing)."),
    to: Optional[str] = typer.Option(None, "--to", help="Publish to this folder or fsspec URL (s3://, gs://...) instead of the Hub."),
    files_per_commit: int = typer.Option(100, "--files-per-commit", min=1, help="Files per Hub commit (smaller: cheaper resumption)."),
) -> None:
    """Upload a Hub-ready folder; re-running after an interruption uploads only what is missing."""
    from laion_hf.hub.push import copy_folder, push_folder

    if (repo_id is None) == (to is None):
        raise UserError("give either REPO_ID (push to the Hub) or --to DIR_OR_URL, not both")
    if to is not None:
        check_output_dir(to)
        result = copy_folder(folder, to)
    else:
        result = push_folder(folder, repo_id, private=private, revision=revision, max_files_per_commit=files_per_commit)
    console.print(
        f"{result.target}: {len(result.uploaded)} uploaded, {len(result.skipped)} already present, "
        f"{len(result.deleted)} stale deleted, {len(result.commits)} commit(s)"
    )
