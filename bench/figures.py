"""One repetition of each measurement: drain rate, foreground round trip, and the fleet
cycle (start-up, memory, idle CPU, stop). Each function measures one side and returns its
numbers. run.py alternates the sides and summarizes the repetitions.
"""

from __future__ import annotations

import time

import psutil

from bench.processes import (
    POLL_INTERVAL,
    START_TIMEOUT,
    BenchContext,
    BenchError,
    ProcessGroup,
    wait_until,
)
from bench.stats import percentile
from gearman_pool.address import ServerAddress
from gearman_pool.client import GearmanClient

TASK = "noop"
# Every job carries these 16 bytes; the no-op workers ignore them.
JOB_DATA = b"0123456789abcdef"
# Seconds that a foreground job may take. A slower job ends the run with JobTimeout.
JOB_TIMEOUT = 10.0
# Seconds that a drain of the queue may take.
DRAIN_TIMEOUT = 600.0
# Foreground jobs that run before the round trips are timed, so that connections and code
# paths are warm.
ROUND_TRIP_WARMUP = 20


def new_client(ctx: BenchContext) -> GearmanClient:
    return GearmanClient([ServerAddress.parse(ctx.server_address)])


def submit_background_jobs(ctx: BenchContext, count: int) -> None:
    """Queue ``count`` background jobs of TASK while no worker serves it."""
    total, _, workers = ctx.task_status(TASK)
    if total or workers:
        raise BenchError(
            f"gearmand still has {total} jobs and {workers} workers of {TASK!r} before a submit"
        )
    with new_client(ctx) as client:
        for _ in range(count):
            client.submit_job(TASK.encode(), JOB_DATA, background=True)
    total = ctx.task_status(TASK)[0]
    if total != count:
        raise BenchError(f"gearmand lists {total} queued jobs of {TASK!r} after {count} submits")


def wait_queue_empty(
    ctx: BenchContext, group: ProcessGroup, timeout: float = DRAIN_TIMEOUT
) -> None:
    wait_until(
        lambda: ctx.task_status(TASK)[0] == 0,
        timeout,
        f"the {TASK!r} queue to drain",
        check=group.check_alive,
    )


def measure_drain(ctx: BenchContext, start_side, job_count: int) -> dict:
    """Queue ``job_count`` jobs, start the side's workers and time them until the queue is empty.

    ``rate`` counts from the moment the first worker process starts, so it includes the
    start-up. ``rate_from_first_job`` counts from the first poll that saw a job taken, and
    divides the jobs still queued then. ``cpu_seconds`` is the CPU time of the workers,
    with the pool's master, from their start until the queue was empty.
    ``master_cpu_seconds`` is the master's share, or None for other sides.
    """
    submit_background_jobs(ctx, job_count)

    started = time.monotonic()
    group = start_side()
    first_job_at = None
    queued_at_first_job = job_count
    deadline = started + DRAIN_TIMEOUT
    while True:
        total = ctx.task_status(TASK)[0]
        now = time.monotonic()
        if first_job_at is None and total < job_count:
            first_job_at = now
            queued_at_first_job = total
        if total == 0:
            finished = now
            break
        if now > deadline:
            raise BenchError(f"{group.label}: {total} jobs still queued after {DRAIN_TIMEOUT:g} s")
        group.check_alive()
        time.sleep(POLL_INTERVAL)

    cpu_seconds = total_cpu_seconds(group.member_pids())
    master_cpu_seconds = None
    if group.pool:
        master_cpu_seconds = total_cpu_seconds([group.processes[0].pid])
    group.terminate()
    ctx.wait_unregistered(TASK)
    seconds = finished - started
    return {
        "seconds": seconds,
        "rate": job_count / seconds,
        "rate_from_first_job": queued_at_first_job / max(finished - first_job_at, 1e-9),
        "cpu_seconds": cpu_seconds,
        "master_cpu_seconds": master_cpu_seconds,
    }


def measure_round_trip(ctx: BenchContext, start_side, job_count: int) -> dict:
    """Time ``job_count`` sequential foreground jobs through one worker of the side.

    Returns the median and the 99th percentile of the latencies in milliseconds.
    """
    group = start_side()
    ctx.wait_registered(group, TASK, 1)
    latencies = []
    with new_client(ctx) as client:
        for _ in range(ROUND_TRIP_WARMUP):
            client.submit_job(TASK.encode(), JOB_DATA, background=False, timeout=JOB_TIMEOUT)
        for _ in range(job_count):
            started = time.perf_counter()
            client.submit_job(TASK.encode(), JOB_DATA, background=False, timeout=JOB_TIMEOUT)
            latencies.append((time.perf_counter() - started) * 1000.0)
    group.check_alive()
    group.terminate()
    ctx.wait_unregistered(TASK)
    return {"median_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99)}


def total_pss(pids: list[int]) -> int:
    """Return the sum of the proportional set sizes (PSS) of ``pids``, in bytes."""
    return sum(psutil.Process(pid).memory_full_info().pss for pid in pids)


def total_cpu_seconds(pids: list[int]) -> float:
    """Return the user plus system CPU seconds that ``pids`` used so far."""
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def measure_startup(ctx: BenchContext, start_side, worker_count: int) -> dict:
    """Time one side from its start until gearmand lists ``worker_count`` of its workers."""
    started = time.monotonic()
    group = start_side()
    registered_at = ctx.wait_registered(group, TASK, worker_count)
    group.terminate()
    ctx.wait_unregistered(TASK)
    return {"startup_seconds": registered_at - started}


def measure_fleet(
    ctx: BenchContext,
    start_side,
    worker_count: int,
    *,
    settle_seconds: float,
    idle_seconds: float,
    jobs_per_worker: int,
) -> dict:
    """Run one side's ``worker_count`` workers through start-up, idle time, jobs and SIGTERM.

    Returns five readings. The start-up is the seconds from the start until gearmand lists
    every worker. The total PSS is read once the workers are ready and again after
    ``jobs_per_worker`` jobs each. The idle CPU is the share of one core that the processes
    used over ``idle_seconds`` without jobs. The stop is the seconds from SIGTERM until every
    process exited.
    """
    started = time.monotonic()
    group = start_side()
    registered_at = ctx.wait_registered(group, TASK, worker_count)

    time.sleep(settle_seconds)
    group.check_alive()
    pids = group.member_pids()
    expected = worker_count + 1 if group.pool else worker_count
    if len(pids) != expected:
        raise BenchError(f"{group.label}: expected {expected} processes, found {len(pids)}")
    pss_ready = total_pss(pids)

    cpu_before = total_cpu_seconds(pids)
    idle_started = time.monotonic()
    time.sleep(idle_seconds)
    cpu_after = total_cpu_seconds(pids)
    idle_elapsed = time.monotonic() - idle_started

    # The jobs are queued while the workers listen, so they start at once.
    with new_client(ctx) as client:
        for _ in range(worker_count * jobs_per_worker):
            client.submit_job(TASK.encode(), JOB_DATA, background=True)
    wait_queue_empty(ctx, group, START_TIMEOUT)
    time.sleep(settle_seconds)
    if sorted(group.member_pids()) != sorted(pids):
        raise BenchError(f"{group.label}: a worker process was replaced during the measurement")
    pss_after_jobs = total_pss(pids)

    stop_seconds = group.terminate()
    ctx.wait_unregistered(TASK)
    return {
        "startup_seconds": registered_at - started,
        "pss_ready_mib": pss_ready / 2**20,
        "pss_after_jobs_mib": pss_after_jobs / 2**20,
        "idle_cpu_percent": (cpu_after - cpu_before) / idle_elapsed * 100.0,
        "stop_seconds": stop_seconds,
    }
