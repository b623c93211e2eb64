"""Benchmark: a demo-scale ``laion-hf build``, the local runner vs the Ray runner, and each stage's share of time.

    .venv/bin/python bench/build.py [--files 3] [--pages 12] [--runs 3] [--workers 2]

1. Generate the demo crawl (WAT files -> loopback image server) and run one full build with the local runner:
   the per-step wall times give each stage's share of an end-to-end build (the slowest stage).
2. From that build's downloaded shards, time the steps a runner schedules (filter, score, dedup, configs)
   with the local runner and with the Ray runner (Ray started once, before timing, with ``--workers`` CPUs),
   alternating runners for ``--runs`` runs, and print min / median / max and the ratio.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from laion_hf.build import Build, BuildOptions
from laion_hf.demo.run import generate_crawl
from laion_hf.recipes import load_recipe, parse_override
from laion_hf.runners.local import LocalRunner
from laion_hf.testing.image_server import ImageServer


def full_build(work: Path, args, overrides) -> tuple[Path, dict[str, float], int]:
    with ImageServer() as server:
        crawl = generate_crawl(work / "crawl", server, files=args.files, pages_per_file=args.pages)
        options = BuildOptions(
            inputs=crawl.wat_files,
            output=str(work / "full"),
            workers=args.workers,
            removals=(("url-md5", crawl.removal_list),),
            allow_private_network=True,
            show_progress=False,
        )
        report = Build(load_recipe("demo", overrides), options).run()
    downloaded = work / "full" / "steps" / "download"
    return downloaded, report.step_seconds, report.stages[1].kept


def timed_steps(source: Path, output: Path, runner, args, overrides) -> float:
    recipe = load_recipe("demo", overrides)
    start = next(step for step in ("filter", "score", "dedup", "configs") if step == "configs" or recipe.has(step))
    options = BuildOptions(inputs=[str(source)], output=str(output), start_at=start, workers=args.workers, show_progress=False)
    started = time.perf_counter()
    Build(recipe, options, runner=runner).run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--pages", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="demo recipe override KEY=VALUE")
    args = parser.parse_args()
    overrides = dict(parse_override(o) for o in args.overrides)
    work = Path(tempfile.mkdtemp(prefix="laion-hf-bench-build-"))
    try:
        source, steps, images = full_build(work, args, overrides)
        total = sum(steps.values())
        print(f"end-to-end local build, {images} downloaded images, {total:.1f} s of steps:")
        for step, seconds in sorted(steps.items(), key=lambda kv: -kv[1]):
            print(f"  {step:28s} {seconds:7.1f} s  {100 * seconds / total:5.1f} %")

        from laion_hf.runners.ray import RayRunner

        ray_runner = RayRunner(num_cpus=args.workers, concurrency=args.workers, object_store_memory=300 * 1024**2,
                               show_progress=False)
        started = time.perf_counter()
        ray_runner.start()
        print(f"ray.init: {time.perf_counter() - started:.1f} s (not in the timings below)")
        runners = {"local": LocalRunner(workers=args.workers, show_progress=False), "ray": ray_runner}
        times: dict[str, list[float]] = {name: [] for name in runners}
        for run in range(args.runs):
            for name, runner in runners.items():
                output = work / f"{name}-{run}"
                times[name].append(timed_steps(source, output, runner, args, overrides))
                shutil.rmtree(output)
        print(f"filter -> score -> dedup -> configs -> publish on {images} images, {args.runs} runs, {args.workers} workers:")
        for name, values in times.items():
            print(f"  {name:6s} min {min(values):6.1f}  median {statistics.median(values):6.1f}  max {max(values):6.1f} s")
        ratio = statistics.median(times["ray"]) / statistics.median(times["local"])
        print(f"ray / local (median wall time): {ratio:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
