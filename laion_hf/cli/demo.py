"""``laion-hf demo`` (``make demo``): the whole chain on a synthetic crawl, offline, in a few minutes.

It replaces the interim clean demo; cleaning an existing copy stays
``laion-hf clean`` (and :func:`laion_hf.demo.clean_sample_copy`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from laion_hf.cli.app import app, check_output_dir, console
from laion_hf.cli.build import print_build_report


@app.command("demo")
def demo_command(
    output: Path = typer.Option(Path("demo-output"), "--output", help="Where the crawl, the build and the Hub copy go."),
    workers: int = typer.Option(2, "--workers", min=1),
    runner: str = typer.Option("local", "--runner", help="local or ray"),
    overrides: list[str] = typer.Option([], "--set", help="Override a demo recipe value, e.g. configs.research-safe.punsafe_above=0.3."),
) -> None:
    """Generate a synthetic crawl, build it with the demo recipe, push it to a loopback Hub and stream it back."""
    check_output_dir(output)
    from laion_hf.demo.run import run_demo
    from laion_hf.recipes import parse_override

    console.print(f"[bold]laion-hf demo[/]: synthetic crawl -> build --recipe demo -> loopback Hub -> load_dataset ({output})")
    result = run_demo(
        output,
        workers=workers,
        runner=runner,
        overrides=dict(parse_override(o) for o in overrides),
        on_build=lambda r: print_build_report(r, "demo build"),
    )
    planted = ", ".join(f"{case}={n}" for case, n in sorted(result.crawl.planted.items()))
    console.print(f"planted in the crawl: {planted}")
    for config, rows in result.streamed.items():
        built = result.report.configs[config]["rows"]
        console.print(f"load_dataset({result.repo_id!r}, {config!r}, streaming=True): {rows} rows streamed back (built {built})")
    from laion_hf.demo.run import SEARCH_CONFIG, SEARCH_QUERY

    console.print(f"search hf://datasets/{result.repo_id}/index/{SEARCH_CONFIG} {SEARCH_QUERY!r}:")
    for rank, row in enumerate(result.search, 1):
        truth = "{} {}s on {}".format(*row["truth"]) if row["truth"] else "not a scene"
        console.print(f"  {rank}. {row['score']:.3f}  {row['caption']!r}  (the image shows: {truth})", highlight=False)
    console.print(f"dataset card: {result.report.card}")
