"""``laion-hf download``: candidates -> img2dataset-layout shards, with the success rate by reason;
``laion-hf opt-outs``: the download's opt-out list as a CSV or parquet removal list."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from laion_hf.cli.app import RAY_ADDRESS_HELP, RUNNER_HELP, app, console, runner_for, stats_table
from laion_hf.download.agents import AI_AGENT_TOKENS, OUR_TOKEN
from laion_hf.download.options import (
    BODY_BYTES_PER_PIXEL,
    DEADLINE_TIMEOUTS,
    MAX_IMAGE_PIXELS,
    MIN_IMAGE_BYTES,
    RESPECT_RULES,
    DownloadError,
)
from laion_hf.download.politeness import HostLimits
from laion_hf.io.atomic import join
from laion_hf.steps.download import REPORT_FILE, DownloadReport, download


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list (``''`` is the empty list)."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def reason_table(report: DownloadReport) -> Table:
    """Successes and failures per reason, each with its share of all rows."""
    table = Table(title="download: outcome by reason")
    table.add_column("outcome")
    table.add_column("rows", justify="right")
    table.add_column("share", justify="right")
    total = max(report.rows_in, 1)
    table.add_row("[bold]success[/]", f"{report.kept:,}", f"{report.kept / total:.2%}")
    for reason, count in sorted(report.dropped.items(), key=lambda item: (-item[1], item[0])):
        label = f"{reason} [dim](opted out)[/]" if reason in report.opted_out else reason
        table.add_row(label, f"{count:,}", f"{count / total:.2%}")
    return table


@app.command("download")
def download_command(
    candidates: list[str] = typer.Argument(..., metavar="CANDIDATES... OUTPUT", help="Candidate parquet files or directories (url, caption, ...), then the output directory (only OUTPUT with --retry-failed)."),
    allow_private_network: bool = typer.Option(False, "--allow-private-network", help="Also fetch URLs whose host resolves to a loopback, private, link-local or other non-global address."),
    allow_network: list[str] = typer.Option([], "--allow-network", metavar="CIDR", help="Also fetch from this non-global network (repeatable), e.g. an internal mirror: 10.1.0.0/16."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Fetch again only the rows of OUTPUT whose status is not success; merge them in under their key."),
    processes: int = typer.Option(1, "--processes", min=1, help="Processes downloading shards in parallel."),
    threads: int = typer.Option(16, "--threads", min=1, help="Download threads per process."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="Seconds for each connect and each read."),
    deadline: Optional[float] = typer.Option(None, "--deadline", min=0.1, help=f"Seconds for a whole request, redirects and body included (default {DEADLINE_TIMEOUTS}x --timeout)."),
    max_body_bytes: Optional[int] = typer.Option(None, "--max-body-bytes", min=1, help=f"Refuse bodies larger than this (default {BODY_BYTES_PER_PIXEL} bytes x --max-image-pixels: 256 MiB at LAION's limit)."),
    max_redirects: int = typer.Option(10, "--max-redirects", min=0, help="Redirects followed per URL (each hop checked like the URL)."),
    retries: int = typer.Option(0, "--retries", min=0, help="Extra attempts per URL after a network failure."),
    rows_per_shard: int = typer.Option(10_000, "--rows-per-shard", min=1, help="Candidates per output shard."),
    resize_mode: str = typer.Option("no", "--resize-mode", help="no (keep original bytes), keep_ratio, center_crop, border, keep_ratio_largest."),
    image_size: int = typer.Option(256, "--image-size", help="Target size when resizing."),
    min_image_bytes: int = typer.Option(MIN_IMAGE_BYTES, "--min-image-bytes", help="Drop images with fewer bytes (as downloaded)."),
    max_image_pixels: int = typer.Option(MAX_IMAGE_PIXELS, "--max-image-pixels", help="Drop images with more pixels."),
    disallowed_header_directives: Optional[str] = typer.Option(None, "--disallowed-header-directives", help="Comma-separated X-Robots-Tag directives to honour (default: noai,noimageai,noml,noindex,noimageindex; '' honours none)."),
    respect: str = typer.Option(",".join(RESPECT_RULES), "--respect", help="Comma-separated site opt-outs honoured: robots (robots.txt), tdmrep (tdmrep.json and the tdm-reservation header), x-robots-tag; '' honours none."),
    agent_tokens: Optional[str] = typer.Option(None, "--agent-tokens", help=f"Comma-separated AI-crawler tokens whose robots.txt groups and X-Robots-Tag values also apply, besides ours ({OUR_TOKEN}); default: {','.join(AI_AGENT_TOKENS)}."),
    host_concurrency: int = typer.Option(HostLimits.concurrency, "--host-concurrency", min=1, help="Requests at once per host (per process)."),
    host_rate: float = typer.Option(HostLimits.rate, "--host-rate", min=0.001, help="Requests started per second per host (per process)."),
    max_retry_after: float = typer.Option(HostLimits.max_retry_after, "--max-retry-after", min=0, help="Longest Retry-After (seconds) waited for on a 429/503 before the row is retried; longer ones fail the row."),
    workers: int = typer.Option(1, "--workers", min=1, hidden=True, help="Same as --processes (image checks now run in the downloading processes)."),
    runner: str = typer.Option("local", "--runner", help=RUNNER_HELP),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
) -> None:
    """Download candidate (url, caption) pairs into img2dataset-layout WebDataset shards (tar + parquet + stats)."""
    *inputs, output_dir = candidates
    if not inputs and not retry_failed:
        raise typer.BadParameter("give at least one candidate file or directory, then OUTPUT")
    extra: dict[str, object] = {}
    if disallowed_header_directives is not None:
        extra["disallowed_header_directives"] = _names(disallowed_header_directives)
    if agent_tokens is not None:
        extra["agent_tokens"] = _names(agent_tokens)
    report = download(
        inputs,
        output_dir,
        allow_private_network=allow_private_network,
        retry_failed=retry_failed,
        allowed_networks=tuple(allow_network),
        processes=max(processes, workers),
        threads=threads,
        timeout=timeout,
        deadline=deadline,
        max_body_bytes=max_body_bytes,
        max_redirects=max_redirects,
        retries=retries,
        rows_per_shard=rows_per_shard,
        resize_mode=resize_mode,
        image_size=image_size,
        min_image_bytes=min_image_bytes,
        max_image_pixels=max_image_pixels,
        respect=_names(respect),
        host_concurrency=host_concurrency,
        host_rate=host_rate,
        max_retry_after=max_retry_after,
        runner=runner_for(runner, max(processes, workers), ray_address),
        **extra,
    )
    console.print(stats_table("download", [report]))
    console.print(reason_table(report))
    console.print(
        f"success rate {report.success_rate:.2%} over {report.rows_in:,} rows in {len(report.shards)} shard(s); "
        f"{report.processed:,} processed by this run; report: {join(output_dir, REPORT_FILE)}"
    )
    if report.opted_out:
        console.print(
            f"{sum(report.opted_out.values()):,} row(s) opted out by their sites; "
            f"export the list with: laion-hf opt-outs {output_dir} opt-outs.csv"
        )


@app.command("opt-outs")
def opt_outs_command(
    output_dir: str = typer.Argument(..., metavar="OUTPUT", help="A download's output directory."),
    path: str = typer.Argument(..., metavar="FILE", help="Where to write the list: .csv or .parquet."),
) -> None:
    """Export a download's opt-outs (url, url_md5, host, reason, evidence, checked_at) as a removal list.

    Apply it to another copy with: laion-hf clean --remove url-md5=FILE ...
    """
    from laion_hf.download.audit import export_opt_outs

    try:
        rows = export_opt_outs(output_dir, path)
    except FileNotFoundError as exc:
        raise DownloadError(f"{output_dir}: no download shards ({exc})") from None
    console.print(f"{rows:,} opted-out row(s) written to {path}; remove them elsewhere with --remove url-md5={path}")
