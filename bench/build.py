"""Benchmark: a demo-scale ``laion-hf build``, the local runner vs the Ray runner, and each stage's share of time.

    .venv/bin/python bench/build.py [--files 3] [--pages 12] [--runs 3] [--workers 2]

1. Generate the demo crawl (WAT files -> loopback image server) and run one full build with the local runner:
   the per-step wall times give each stage's share of an end-to-end build (the slowest stage).
2. From that build's downloaded shards, time the steps a runner schedules (filter+score, dedup, configs, publish)
   with the local runner and with the Ray runner (``--workers`` CPUs and worker actors), and print wall and CPU
   seconds (this process and every process under it: pool workers, Ray's workers and daemons) min / median / max
   and the ratio. The fixed start-up cost of Ray is timed apart from that ratio: ``ray.init``, then one cold Ray
   run (new worker processes import torch and our modules), then ``--runs`` pairs alternating local and Ray with
   the Ray workers kept, as one process running several builds (or a long build's later passes) sees them. The
   local runs follow the local build in the same process, so they too start warm (torch imported).
"""

from __future__ import annotations

import argparse
import os
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


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and every process below it, living or reaped (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        stats[int(entry)] = (int(fields[1]), sum(int(v) for v in fields[11:15]) / ticks)  # ppid, utime+stime+cutime+cstime
    below, total, frontier = set(), 0.0, [os.getpid()]
    while frontier:
        pid = frontier.pop()
        below.add(pid)
        total += stats.get(pid, (0, 0.0))[1]
        frontier.extend(child for child, (ppid, _) in stats.items() if ppid == pid and child not in below)
    return total


def timed_steps(source: Path, output: Path, runner, args, overrides) -> tuple[float, float, float, dict[str, float]]:
    """(wall seconds, CPU seconds, 1-minute load average at the end, seconds by step) of filter -> publish."""
    recipe = load_recipe("demo", overrides)
    start = next(step for step in ("filter", "score", "dedup", "configs") if step == "configs" or recipe.has(step))
    options = BuildOptions(inputs=[str(source)], output=str(output), start_at=start, workers=args.workers, show_progress=False)
    started, cpu = time.perf_counter(), cpu_seconds()
    report = Build(recipe, options, runner=runner).run()
    return time.perf_counter() - started, cpu_seconds() - cpu, os.getloadavg()[0], report.step_seconds


def by_step(seconds: dict[str, float]) -> str:
    return ", ".join(f"{step} {value:.1f}" for step, value in seconds.items())


def summary(values: list[float]) -> str:
    return f"min {min(values):6.1f}  median {statistics.median(values):6.1f}  max {max(values):6.1f}"


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
        print(f"ray.init: {time.perf_counter() - started:.1f} s, load {os.getloadavg()[0]:.1f}")
        cold, cold_cpu, load, steps = timed_steps(source, work / "ray-cold", ray_runner, args, overrides)
        shutil.rmtree(work / "ray-cold")
        print(f"cold Ray run (worker processes started, torch imported inside): {cold:.1f} s wall, {cold_cpu:.1f} s CPU,"
              f" load {load:.1f} ({by_step(steps)})")
        runners = {"local": LocalRunner(workers=args.workers, show_progress=False), "ray": ray_runner}
        times: dict[str, list[tuple[float, float, float, dict[str, float]]]] = {name: [] for name in runners}
        for run in range(args.runs):
            for name, runner in runners.items():
                output = work / f"{name}-{run}"
                times[name].append(timed_steps(source, output, runner, args, overrides))
                shutil.rmtree(output)
                wall, cpu, load, steps = times[name][-1]
                print(f"  run {run} {name:6s} {wall:6.1f} s wall {cpu:6.1f} s CPU  load {load:.1f} ({by_step(steps)})",
                      flush=True)
        print(f"filter+score -> dedup -> configs -> publish on {images} images, {args.runs} runs, {args.workers} workers:")
        for name, values in times.items():
            print(f"  {name:6s} wall {summary([v[0] for v in values])} s   CPU {summary([v[1] for v in values])} s")
        wall = {name: statistics.median(v[0] for v in values) for name, values in times.items()}
        cpu = {name: statistics.median(v[1] for v in values) for name, values in times.items()}
        print(f"ray / local (median, warm Ray workers): wall {wall['ray'] / wall['local']:.2f}x, "
              f"CPU {cpu['ray'] / cpu['local']:.2f}x")
        print(f"Ray's fixed start-up per process: ray.init above + {cold - wall['ray']:.1f} s (cold run - warm median)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
