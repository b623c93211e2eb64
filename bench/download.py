"""Benchmark ``laion_hf.steps.download.download`` with and without its consent checks, and plain img2dataset.

Loopback :class:`~laion_hf.testing.image_server.ImageServer` s, in their own
process (so their threads do not share an interpreter with either tool), serve
N distinct ~12 KB PNGs (incompressible noise, so every image passes the 5 KB
rule) spread over ``--hosts`` hosts (127.0.0.10, .11, ...; each with a
robots.txt of a real site's shape and a tdmrep.json, neither of which refuses
these images), and one candidate parquet lists them. Runs are paired, tools
alternating within each run (A B C A B C ...):

* ``ours``: ``download(candidates, out, allowed_networks=loopback, respect=())``
  -- our own fetcher (address policy on every hop, pinned connections,
  deadline, body cap, per-host limits), LAION's image rules with a full Pillow
  decode on the original bytes in the downloading threads, shards written in
  key order, stats and report; no site opt-outs consulted;
* ``ours-no-host-limits``: ``ours`` without per-host politeness (no request
  rate cap, as many requests at once per host as threads): what the limits
  cost when a run has few hosts (img2dataset has none);
* ``ours+consent``: the same as ``ours`` with the default ``respect`` (robots.txt and
  tdmrep.json once per host, X-Robots-Tag and tdm-reservation headers);
* ``img2dataset-raw``: ``img2dataset.download`` with the same processes,
  threads, timeout and ``disable_all_reencoding=True`` (original bytes, no
  checks: the closest thing to ours);
* ``img2dataset-default``: ``img2dataset.download`` with its defaults
  (``resize_mode="border"``, 256 px, JPEG re-encode): what a user would
  otherwise run.

Images/s = successful images / wall time of the call (process start-up
included, as a user sees it); CPU = user + system seconds of this process and
its children during the call. img2dataset spends most of a small run starting
its processes (each imports cv2 and albumentations), so its rate *while
downloading* is printed too: successes over the span of its own shard
``start_time`` .. ``end_time`` (start-up excluded), and ours over the shard
tasks' seconds in their done markers (input read, fetches, checks, writes).
Prints min/median/max per tool and the ratios of medians.

    .venv/bin/python bench/download.py [--images 1000] [--hosts 1] [--runs 3] [--processes 1] [--threads 16]
        [--tools ours,ours-no-host-limits,ours+consent,img2dataset-raw,img2dataset-default]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from laion_hf.steps.download import download
from laion_hf.testing.image_server import ImageServer


def noise_png(rng: np.random.Generator, size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


#: A robots.txt of the shape real sites publish: search engines welcome, AI crawlers kept out of some paths.
ROBOTS_TXT = "\n".join([
    "User-agent: *", "Disallow: /admin/", "Disallow: /cart", "Disallow: /*?session=", "Allow: /", "",
    *(line for bot in ("GPTBot", "CCBot", "ClaudeBot", "Google-Extended", "Bytespider")
      for line in (f"User-agent: {bot}", "Disallow: /members/", "Disallow: /drafts/", "")),
    "Sitemap: https://example.com/sitemap.xml",
])
TDMREP = [{"location": "/members/*", "tdm-reservation": 1, "tdm-policy": "https://example.com/tdm.json"}]


def serve(images: int, hosts: int, urls: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    """The image servers' process: serve the images, spread over ``hosts`` loopback hosts, until told to stop."""
    rng = np.random.default_rng(0)
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(ImageServer(f"127.0.{(10 + h) // 256}.{(10 + h) % 256}")) for h in range(hosts)]
        for server in servers:
            server.robots_txt(ROBOTS_TXT)
            server.tdmrep(TDMREP)
        urls.put([servers[i % hosts].image(f"/img/{i}.png", noise_png(rng)) for i in range(images)])
        stop.wait()


def run_ours(candidates: Path, output: Path, args: argparse.Namespace, consent: bool,
             host_limits: bool = True) -> tuple[int, float]:
    extra = {} if consent else {"respect": ()}
    if not host_limits:
        extra.update(host_rate=float("inf"), host_concurrency=args.threads)
    download(str(candidates), str(output), allowed_networks=("127.0.0.0/8",), processes=args.processes,
             threads=args.threads, timeout=10, show_progress=False, **extra)
    markers = [json.loads(p.read_text())["stages"][0] for p in output.glob(".laion-hf/done/*.json")]
    return sum(m["kept"] for m in markers), sum(m["seconds"] for m in markers) / args.processes


def run_img2dataset(candidates: Path, output: Path, args: argparse.Namespace, raw: bool) -> tuple[int, float]:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import img2dataset

    extra = {"disable_all_reencoding": True, "resize_mode": "no"} if raw else {}
    with contextlib.redirect_stdout(sys.stderr):
        img2dataset.download(url_list=str(candidates), input_format="parquet", url_col="url", caption_col="caption",
                             output_folder=str(output), output_format="webdataset", processes_count=args.processes,
                             thread_count=args.threads, timeout=10, enable_wandb=False,
                             distributor="multiprocessing", **extra)
    stats = [json.loads(p.read_text()) for p in output.glob("*_stats.json")]
    downloading = max(s["end_time"] for s in stats) - min(s["start_time"] for s in stats)
    return sum(s["successes"] for s in stats), downloading


def cpu_seconds() -> float:
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=1, help="loopback hosts the images are spread over")
    parser.add_argument("--tools", default="ours,ours+consent,img2dataset-raw,img2dataset-default")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()

    every_tool: dict[str, Callable[[Path, Path], tuple[int, float]]] = {
        "ours": lambda c, o: run_ours(c, o, args, consent=False),
        "ours-no-host-limits": lambda c, o: run_ours(c, o, args, consent=False, host_limits=False),
        "ours+consent": lambda c, o: run_ours(c, o, args, consent=True),
        "img2dataset-raw": lambda c, o: run_img2dataset(c, o, args, raw=True),
        "img2dataset-default": lambda c, o: run_img2dataset(c, o, args, raw=False),
    }
    tools = {name: every_tool[name] for name in args.tools.split(",")}
    rates: dict[str, list[float]] = {name: [] for name in tools}
    cpus: dict[str, list[float]] = {name: [] for name in tools}
    downloading: dict[str, list[float]] = {name: [] for name in tools}  # the shard tasks' rate, start-up excluded
    context = multiprocessing.get_context("fork")
    url_queue, stop = context.Queue(), context.Event()
    server = context.Process(target=serve, args=(args.images, args.hosts, url_queue, stop), daemon=True)
    server.start()
    try:
        urls = url_queue.get(timeout=300)
        with tempfile.TemporaryDirectory() as tmp:
            candidates = Path(tmp) / "candidates.parquet"
            pq.write_table(pa.table({"url": urls, "caption": [f"image {i}" for i in range(len(urls))]}), candidates)
            for run in range(args.runs):
                for name, tool in tools.items():
                    output = Path(tmp) / f"{name}-{run}"
                    started, cpu_started = time.perf_counter(), cpu_seconds()
                    successes, busy = tool(candidates, output)
                    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
                    if successes != args.images:
                        raise SystemExit(f"{name}: {successes} of {args.images} images downloaded")
                    rates[name].append(successes / seconds)
                    cpus[name].append(cpu)
                    downloading[name].append(successes / busy)
                    print(f"run {run + 1} {name:20s} {successes / seconds:8.1f} images/s ({seconds:.1f} s wall, "
                          f"{cpu:.1f} s CPU), {successes / busy:.1f} images/s while downloading", flush=True)
    finally:
        stop.set()
        server.join(timeout=30)

    print(f"\n{args.images} images on {args.hosts} host(s) x {args.runs} runs, processes={args.processes}, threads={args.threads}")
    print(f"{'tool':20s} images/s min / median / max | while downloading | CPU s")
    for name, values in rates.items():
        print(f"{name:20s} " + " | ".join(f"{min(v):.1f} / {statistics.median(v):.1f} / {max(v):.1f}"
                                          for v in (values, downloading[name], cpus[name])))
    median = {name: {kind: statistics.median(v[name]) for kind, v in (("rate", rates), ("busy", downloading), ("cpu", cpus))}
              for name in tools}
    if {"ours", "ours+consent"} <= set(tools):
        print(f"consent checks (medians): {1 - median['ours+consent']['rate'] / median['ours']['rate']:+.1%} images/s lost, "
              f"{median['ours+consent']['cpu'] / median['ours']['cpu'] - 1:+.1%} CPU")
    for peer in [name for name in tools if name != "ours"] if "ours" in tools else []:
        print(f"ratio ours / {peer} (medians): {median['ours']['rate'] / median[peer]['rate']:.2f}x images/s, "
              f"{median['ours']['busy'] / median[peer]['busy']:.2f}x while downloading, "
              f"{median[peer]['cpu'] / median['ours']['cpu']:.2f}x less CPU")


if __name__ == "__main__":
    main()
