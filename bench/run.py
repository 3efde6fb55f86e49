#!/usr/bin/env python3
"""Benchmark gearman_pool against bare worker loops, pygearman and separate processes.

Starts a private gearmand on 127.0.0.1 and a free port (never 4730), then measures:

- drain rate: N queued background jobs drained by 2 pool children, 2 bare GearmanWorker
  loops without Django, and 2 pygearman 0.2.6 workers;
- foreground round trip: median and p99 latency of sequential jobs through 1 pool child
  and 1 bare loop;
- start-up, memory (PSS), idle CPU and stop time of 8 pool children plus master against
  8 separate ``manage.py gearman_worker_noop`` processes;
- reload: SIGHUP with changed worker code under a stream of foreground jobs.

Each comparison alternates its sides within one run, repetition by repetition, and
reports the median with the min-max spread. The table goes to stdout and the same data,
with every sample, to a JSON file that bench/render.py turns into BENCHMARKS.rst.

Usage:
    python bench/run.py [--quick] [--repeat N] [--json-out PATH] [--max-load LOAD]

Needs the package with its test extra and pygearman (pip install -r bench/requirements.txt);
`make bench` and `make bench-quick` install both.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench import figures, reload, render  # noqa: E402
from bench.processes import BenchContext, BenchError  # noqa: E402
from bench.stats import paired_ratios, summarize  # noqa: E402
from gearman_pool.errors import GearmanError  # noqa: E402
from tests.gearmand import GearmandError, GearmandProcess  # noqa: E402

DEFAULT_JSON_OUT = REPO_ROOT / "bench" / "results.json"
# Seconds between two reads of /proc/loadavg while --max-load waits.
LOAD_POLL_INTERVAL = 15.0
FLEET_WORKERS = 8
DRAIN_WORKERS = 2
# The benchmark groups, in the order a full run measures them.
GROUPS = ("drain", "round_trip", "fleet", "reload")


@dataclasses.dataclass
class Sizes:
    """How much work each benchmark does. --quick shrinks everything to seconds."""

    repeat: int
    drain_jobs: int
    round_trip_jobs: int
    idle_seconds: float
    # Seconds that workers get after registering, and after a burst of jobs, before a
    # memory reading.
    settle_seconds: float
    # Jobs per worker before the second memory reading of the fleet benchmark.
    jobs_per_worker: int
    # Foreground jobs per task that must have run before the reload starts.
    reload_preroll_jobs: int
    # Seconds that the reload benchmark keeps sampling after the reload completed.
    reload_settle_seconds: float


FULL = Sizes(
    repeat=5,
    drain_jobs=20_000,
    round_trip_jobs=2_000,
    idle_seconds=30.0,
    settle_seconds=1.0,
    jobs_per_worker=100,
    reload_preroll_jobs=50,
    reload_settle_seconds=1.0,
)
QUICK = Sizes(
    repeat=1,
    drain_jobs=500,
    round_trip_jobs=100,
    idle_seconds=3.0,
    settle_seconds=0.3,
    jobs_per_worker=10,
    reload_preroll_jobs=10,
    reload_settle_seconds=0.3,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    parser.add_argument(
        "--quick", action="store_true", help="Run every benchmark once with small sizes (seconds)."
    )
    parser.add_argument(
        "--repeat", type=int, help="Repetitions of each comparison (default: 5, or 1 with --quick)."
    )
    parser.add_argument(
        "--drain-jobs", type=int, help="Jobs of the drain benchmark (default: 20000, or 500)."
    )
    parser.add_argument(
        "--round-trip-jobs",
        type=int,
        help="Timed foreground jobs per side (default: 2000, or 100).",
    )
    parser.add_argument(
        "--idle-seconds", type=float, help="Seconds of the idle CPU reading (default: 30, or 3)."
    )

    parser.add_argument(
        "--json-out",
        type=Path,
        metavar="PATH",
        help=f"The JSON file of the results (default: {DEFAULT_JSON_OUT.relative_to(REPO_ROOT)}; "
        "required with --only).",
    )
    parser.add_argument(
        "--max-load",
        type=float,
        metavar="LOAD",
        help="Wait until the 1-minute load average in /proc/loadavg is below LOAD, then measure.",
    )
    parser.add_argument(
        "--load-wait",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="How long --max-load waits before the run fails (default: 1800).",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="Keep the work directory with every process's log."
    )
    parser.add_argument(
        "--only",
        metavar="GROUPS",
        help=f"Run only these benchmark groups, comma-separated: {', '.join(GROUPS)}. "
        "Meant for trying a change; the JSON then lacks the other figures.",
    )

    args = parser.parse_args(argv)
    for name in ("repeat", "drain_jobs", "round_trip_jobs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"invalid --{name.replace('_', '-')} {value}: give 1 or more")
    if args.only is not None:
        unknown = [name for name in args.only.split(",") if name not in GROUPS]
        if unknown or not args.only:
            parser.error(
                f"invalid --only {args.only!r}: unknown group {', '.join(map(repr, unknown))}; "
                f"give groups from {', '.join(GROUPS)}, comma-separated"
            )
        if args.json_out is None:
            # A partial run must not replace the full record that BENCHMARKS.rst is built from.
            parser.error(f"--only needs --json-out PATH, so that {DEFAULT_JSON_OUT.relative_to(REPO_ROOT)} keeps the full run")
    if args.json_out is None:
        args.json_out = DEFAULT_JSON_OUT
    if args.idle_seconds is not None and args.idle_seconds <= 0:
        parser.error(
            f"invalid --idle-seconds {args.idle_seconds}: give a positive number of seconds"
        )
    return args


def choose_sizes(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else FULL
    overrides = {
        name: getattr(args, name)
        for name in ("repeat", "drain_jobs", "round_trip_jobs", "idle_seconds")
        if getattr(args, name) is not None
    }
    return dataclasses.replace(sizes, **overrides)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def wait_for_load(max_load: float, max_wait: float) -> None:
    """Wait until the 1-minute load average is below ``max_load``.

    Raises BenchError when it is still not below after ``max_wait`` seconds.
    """
    deadline = time.monotonic() + max_wait
    while True:
        load = os.getloadavg()[0]
        if load < max_load:
            log(f"1-minute load average {load:.2f} is below {max_load:g}; starting")
            return
        if time.monotonic() >= deadline:
            raise BenchError(
                f"the 1-minute load average stayed at {max_load:g} or above for {max_wait:g} s"
            )
        log(
            f"1-minute load average {load:.2f} is not below {max_load:g}; "
            f"waiting {LOAD_POLL_INTERVAL:g} s"
        )
        time.sleep(LOAD_POLL_INTERVAL)


def compile_bytecode() -> None:
    """Write the .pyc files of the package and the benchmark project.

    pip compiles a package when it installs it, so deployed workers do not compile source
    at start. An editable install run with PYTHONDONTWRITEBYTECODE=1 would compile every
    module of the package at every process start, which would count in the start-up.
    """
    for directory in ("gearman_pool", "django_gearman_commands", "bench"):
        if not compileall.compile_dir(REPO_ROOT / directory, quiet=1):
            raise BenchError(f"compiling the bytecode of {directory}/ failed; see the output above")


def alternate(title: str, sides: dict, repeat: int, measure) -> dict[str, list[dict]]:
    """Measure every side ``repeat`` times, rotating which side goes first in each repetition."""
    names = list(sides)
    results: dict[str, list[dict]] = {name: [] for name in names}
    for repetition in range(repeat):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            log(f"{title}: repetition {repetition + 1}/{repeat}, {name}")
            results[name].append(measure(sides[name]))
    return results


def field(runs: list[dict], key: str) -> list[float]:
    return [run[key] for run in runs]


def make_figure(
    figure_id: str,
    title: str,
    unit: str,
    pool: list[float],
    baseline_label: str | None = None,
    baseline: list[float] | None = None,
    target: dict | None = None,
    note: str | None = None,
) -> dict:
    figure = {
        "id": figure_id,
        "title": title,
        "unit": unit,
        "pool": summarize(pool),
        "baseline": None,
        "ratio": None,
        "target": target,
        "met": None,
        "note": note,
    }
    if baseline is not None:
        figure["baseline"] = {"label": baseline_label, **summarize(baseline)}
        ratios = paired_ratios(pool, baseline)
        if ratios:
            figure["ratio"] = summarize(ratios)
    if target is not None:
        figure["met"] = target_met(figure, target)
    return figure


def target_met(figure: dict, target: dict) -> bool:
    """Return whether the figure meets its target.

    A ratio target is judged on the median of the paired ratios, and an absolute target on
    every repetition.
    """
    kind, value = target["kind"], target["value"]
    if kind == "ratio_at_least":
        return figure["ratio"] is not None and figure["ratio"]["median"] >= value
    if kind == "ratio_at_most":
        return figure["ratio"] is not None and figure["ratio"]["median"] <= value
    if kind == "all_at_most":
        return figure["pool"]["max"] <= value
    if kind == "all_below":
        return figure["pool"]["max"] < value
    if kind == "all_at_least":
        return figure["pool"]["min"] >= value
    raise ValueError(f"unknown target kind {kind!r}")


def run_drain(ctx: BenchContext, sizes: Sizes) -> list[dict]:
    sides = {
        "pool": lambda: ctx.start_pool(f"{figures.TASK}={DRAIN_WORKERS}"),
        "bare loop": lambda: ctx.start_bare_workers(figures.TASK, DRAIN_WORKERS),
        "pygearman": lambda: ctx.start_pygearman_workers(figures.TASK, DRAIN_WORKERS),
    }
    runs = alternate(
        "drain",
        sides,
        sizes.repeat,
        lambda start: figures.measure_drain(ctx, start, sizes.drain_jobs),
    )
    title = f"Drain rate, {sizes.drain_jobs:,} jobs, {DRAIN_WORKERS} workers"
    serving = field(runs["pool"], "rate_from_first_job")
    return [
        make_figure(
            "drain_rate",
            title,
            "jobs/s",
            serving,
            "bare loop",
            field(runs["bare loop"], "rate_from_first_job"),
            {"kind": "ratio_at_least", "value": 0.95, "text": "ratio >= 0.95"},
            "Clock from the first status poll that saw a job taken; the start-up is its own figure.",
        ),
        make_figure(
            "drain_rate_pygearman",
            f"{title}, against pygearman 0.2.6",
            "jobs/s",
            serving,
            "pygearman 0.2.6",
            field(runs["pygearman"], "rate_from_first_job"),
        ),
        make_figure(
            "drain_rate_with_startup",
            f"{title}, clock from the start of the processes",
            "jobs/s",
            field(runs["pool"], "rate"),
            "bare loop",
            field(runs["bare loop"], "rate"),
            note="The pool pays for loading Django here, and the bare loop does not.",
        ),
        make_figure(
            "drain_cpu",
            "CPU time of the workers for the drain",
            "s",
            field(runs["pool"], "cpu_seconds"),
            "bare loop",
            field(runs["bare loop"], "cpu_seconds"),
            note="User plus system time from the start of the processes, with the pool's master.",
        ),
        make_figure(
            "drain_master_cpu",
            "CPU time of the pool's master for the drain",
            "s",
            field(runs["pool"], "master_cpu_seconds"),
        ),
    ]


def run_round_trip(ctx: BenchContext, sizes: Sizes) -> list[dict]:
    sides = {
        "pool": lambda: ctx.start_pool(f"{figures.TASK}=1"),
        "bare loop": lambda: ctx.start_bare_workers(figures.TASK, 1),
    }
    runs = alternate(
        "round trip",
        sides,
        sizes.repeat,
        lambda start: figures.measure_round_trip(ctx, start, sizes.round_trip_jobs),
    )
    note = f"{sizes.round_trip_jobs:,} sequential foreground jobs per repetition through 1 worker."
    return [
        make_figure(
            f"round_trip_{key}",
            f"Foreground round trip, {label}",
            "ms",
            field(runs["pool"], f"{key}_ms"),
            "bare loop",
            field(runs["bare loop"], f"{key}_ms"),
            note=note if key == "median" else None,
        )
        for key, label in (("median", "median"), ("p99", "99th percentile"))
    ]


def run_fleet(ctx: BenchContext, sizes: Sizes) -> list[dict]:
    sides = {
        "pool": lambda: ctx.start_pool(f"{figures.TASK}={FLEET_WORKERS}"),
        "separate": lambda: ctx.start_worker_commands(figures.TASK, FLEET_WORKERS),
    }
    runs = alternate(
        "start-up, memory, idle, stop",
        sides,
        sizes.repeat,
        lambda start: figures.measure_fleet(
            ctx,
            start,
            FLEET_WORKERS,
            settle_seconds=sizes.settle_seconds,
            idle_seconds=sizes.idle_seconds,
            jobs_per_worker=sizes.jobs_per_worker,
        ),
    )
    baseline = f"{FLEET_WORKERS} processes"

    def compare(key: str, figure_id: str, title: str, unit: str, target=None, note=None) -> dict:
        return make_figure(
            figure_id,
            title,
            unit,
            field(runs["pool"], key),
            baseline,
            field(runs["separate"], key),
            target,
            note,
        )

    # The floor of the start-up ratio: the pool loads Django once, as one worker process
    # does, so on a machine with C cores the ratio cannot go much below C / 8.
    single_sides = {
        "pool": lambda: ctx.start_pool(f"{figures.TASK}={FLEET_WORKERS}"),
        "one process": lambda: ctx.start_worker_commands(figures.TASK, 1),
    }
    single = alternate(
        "start-up, pool against one process",
        single_sides,
        sizes.repeat,
        lambda start: figures.measure_startup(
            ctx, start, FLEET_WORKERS if start is single_sides["pool"] else 1
        ),
    )

    return [
        compare(
            "startup_seconds",
            "startup",
            f"Start-up until {FLEET_WORKERS} workers are registered",
            "s",
            {"kind": "ratio_at_most", "value": 0.25, "text": "ratio <= 0.25"},
        ),
        make_figure(
            "startup_one_process",
            f"Start-up of the pool's {FLEET_WORKERS} workers against one worker process",
            "s",
            field(single["pool"], "startup_seconds"),
            "1 process",
            field(single["one process"], "startup_seconds"),
            note="What the pool adds to one start of Django: forking and registering the children.",
        ),
        compare(
            "pss_ready_mib",
            "memory_ready",
            f"Memory (PSS) of {FLEET_WORKERS} ready workers, with the pool's master",
            "MiB",
            {"kind": "ratio_at_most", "value": 0.5, "text": "ratio <= 0.5"},
        ),
        compare(
            "pss_after_jobs_mib",
            "memory_after_jobs",
            f"Memory (PSS) after {sizes.jobs_per_worker} jobs per worker",
            "MiB",
        ),
        compare("stop_seconds", "stop", f"SIGTERM until exit, {FLEET_WORKERS} idle workers", "s"),
        compare(
            "idle_cpu_percent",
            "idle_cpu",
            f"CPU of {FLEET_WORKERS} idle workers and the master over {sizes.idle_seconds:g} s",
            "% of a core",
            {"kind": "all_below", "value": 1.0, "text": "pool < 1 % in every repetition"},
        ),
    ]


def run_reload(ctx: BenchContext, sizes: Sizes) -> tuple[list[dict], list[dict]]:
    runs = []
    for repetition in range(sizes.repeat):
        log(f"reload: repetition {repetition + 1}/{sizes.repeat}")
        app_root = ctx.work_dir / f"reload-app-{repetition + 1}"
        runs.append(
            reload.measure_reload(
                ctx, app_root, sizes.reload_preroll_jobs, sizes.reload_settle_seconds
            )
        )
    configured = reload.CHILDREN_PER_TASK
    tasks = f"{len(reload.TASKS)} tasks x {configured} children"
    zero = {"kind": "all_at_most", "value": 0, "text": "0 in every repetition"}
    result = [
        make_figure(
            "reload_failed",
            f"Reload under load ({tasks}): jobs failed",
            "jobs",
            field(runs, "failed"),
            target=zero,
        ),
        make_figure(
            "reload_lost",
            f"Reload under load ({tasks}): jobs lost",
            "jobs",
            field(runs, "lost"),
            target=zero,
            note="A lost job is a foreground job whose client got no result within 15 s.",
        ),
        make_figure(
            "reload_seconds",
            "Reload: SIGHUP until every child runs the new code",
            "s",
            field(runs, "reload_seconds"),
        ),
        make_figure(
            "reload_lowest_serving",
            "Reload: lowest worker count of a task at gearmand",
            "workers",
            field(runs, "lowest_serving"),
            target={
                "kind": "all_at_least",
                "value": configured,
                "text": f">= {configured} (configured)",
            },
            note="gearmand's status, sampled every 20 ms from SIGHUP until 1 s after the reload.",
        ),
    ]
    return result, runs


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def read_cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def read_memory_total() -> int | None:
    """Return MemTotal of /proc/meminfo in bytes."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def describe_machine(ctx: BenchContext) -> dict:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": read_cpu_model(),
        "memory_bytes": read_memory_total(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "django": package_version("Django"),
        "gearmand": ctx.admin.version(),
        "pygearman": package_version("pygearman"),
        "psutil": package_version("psutil"),
        "gearman_pool": package_version("django-gearman-commands"),
    }


def run_benchmarks(ctx: BenchContext, sizes: Sizes, groups: list[str]) -> tuple[list[dict], dict]:
    all_figures = []
    details = {}
    if "drain" in groups:
        all_figures += run_drain(ctx, sizes)
    if "round_trip" in groups:
        all_figures += run_round_trip(ctx, sizes)
    if "fleet" in groups:
        all_figures += run_fleet(ctx, sizes)
    if "reload" in groups:
        reload_figures, details["reload_runs"] = run_reload(ctx, sizes)
        all_figures += reload_figures
    return all_figures, details


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    sizes = choose_sizes(args)
    if package_version("pygearman") is None:
        print(
            "bench/run.py: pygearman is not installed; run `pip install -r bench/requirements.txt` "
            "(or `make bench`, which installs it)",
            file=sys.stderr,
        )
        return 2

    try:
        if args.max_load is not None:
            wait_for_load(args.max_load, args.load_wait)
        compile_bytecode()
        load_before = os.getloadavg()
        started = time.time()
        work_dir = Path(tempfile.mkdtemp(prefix="gearman_pool-bench-"))
        server = GearmandProcess()
        server.start()
    except (BenchError, GearmandError) as error:
        print(f"bench/run.py: {error}", file=sys.stderr)
        return 2

    ctx = BenchContext(server.address, work_dir)
    failed = True
    try:
        log(f"gearmand (pid {server.pid}) listens on {server.address}; logs in {work_dir}")
        machine = describe_machine(ctx)
        results, details = run_benchmarks(ctx, sizes, args.only.split(",") if args.only else list(GROUPS))
        failed = False
    except (BenchError, GearmanError) as error:
        print(f"bench/run.py: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    finally:
        ctx.close()
        server.stop()
        if failed or args.keep_logs:
            log(f"the logs of every process are kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)

    report = {
        "meta": {
            "date": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "command": shlex.join(["python", "bench/run.py", *argv]),
            "quick": args.quick,
            "sizes": dataclasses.asdict(sizes),
            "duration_seconds": round(time.time() - started, 1),
            "load_before": list(load_before),
            "load_after": list(os.getloadavg()),
            "machine": machine,
        },
        "figures": results,
        "details": details,
    }
    print(render.text_table(report))
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
