"""One repetition of the reload benchmark: SIGHUP with changed worker code under load.

A pool serves two tasks of an app written to a temporary directory on PYTHONPATH. Two
threads submit foreground jobs back to back, one per task, while a sampler reads gearmand's
``status`` and ``workers`` every 20 ms. The app is rewritten to return "v2" instead of
"v1", and the master gets SIGHUP. The reload is complete when every worker that gearmand
lists for each task is a new child and no old child is left.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from bench.processes import BenchContext, BenchError, wait_until
from gearman_pool.address import ServerAddress
from gearman_pool.client import GearmanClient
from gearman_pool.errors import GearmanError, JobFailed
from gearman_pool.server_info import AdminClient

APP_NAME = "benchreload"
TASKS = ("reload_a", "reload_b")
CHILDREN_PER_TASK = 2
SAMPLE_INTERVAL = 0.02
# Seconds that a reload may take before the benchmark gives up.
RELOAD_TIMEOUT = 60.0
# Seconds that a foreground job may take before it counts as lost.
JOB_TIMEOUT = 15.0

WORKER_TEMPLATE = """from gearman_pool import GearmanWorkerBaseCommand


class Command(GearmanWorkerBaseCommand):
    task_name = {task!r}

    def do_job(self, job_data):
        return {version!r}
"""


def write_app(root: Path, version: str) -> None:
    """Write the reload app under ``root``, with workers that return ``version``."""
    commands = root / APP_NAME / "management" / "commands"
    commands.mkdir(parents=True, exist_ok=True)
    for package in (root / APP_NAME, root / APP_NAME / "management", commands):
        (package / "__init__.py").write_text("")
    for task in TASKS:
        (commands / f"gearman_worker_{task}.py").write_text(
            WORKER_TEMPLATE.format(task=task, version=version)
        )


class JobStream(threading.Thread):
    """Submits foreground jobs of one task back to back and records how each one ended."""

    def __init__(self, address: str, task: str):
        super().__init__(name=f"stream-{task}", daemon=True)
        self.address = address
        self.task = task
        self.stopped = threading.Event()
        self.results: list[bytes] = []
        self.failed: list[str] = []
        self.lost: list[str] = []

    def run(self) -> None:
        with GearmanClient([ServerAddress.parse(self.address)]) as client:
            while not self.stopped.is_set():
                try:
                    job = client.submit_job(
                        self.task.encode(), b"", background=False, timeout=JOB_TIMEOUT
                    )
                except JobFailed as exc:
                    self.failed.append(str(exc))
                except GearmanError as exc:
                    # A timeout or a lost connection: the client never learns the job's result.
                    self.lost.append(f"{type(exc).__name__}: {exc}")
                else:
                    self.results.append(job.result)

    def stop(self) -> None:
        self.stopped.set()
        self.join(JOB_TIMEOUT + 5)
        if self.is_alive():
            raise BenchError(f"the job stream of {self.task!r} did not stop")


class WorkerSampler(threading.Thread):
    """Records, every SAMPLE_INTERVAL seconds, each task's worker count and worker pids.

    The count comes from ``status``. The pids come from ``workers``, which lists the client
    id that each pool child registers with, ``host:pid:task#slot``.
    """

    def __init__(self, address: str):
        super().__init__(name="worker-sampler", daemon=True)
        self.address = address
        self.stopped = threading.Event()
        self.samples: list[tuple[float, dict[str, int], dict[str, set[int]]]] = []
        self.error: Exception | None = None

    def run(self) -> None:
        admin = AdminClient(self.address, io_timeout=5.0)
        try:
            while not self.stopped.is_set():
                counts = {
                    status.task: status.workers for status in admin.status() if status.task in TASKS
                }
                pids: dict[str, set[int]] = {task: set() for task in TASKS}
                for worker in admin.workers():
                    for task in worker.tasks:
                        if task in pids:
                            pids[task].add(int(worker.client_id.rsplit(":", 2)[1]))
                self.samples.append((time.monotonic(), counts, pids))
                self.stopped.wait(SAMPLE_INTERVAL)
        except (GearmanError, OSError, ValueError, IndexError) as exc:
            self.error = exc
        finally:
            admin.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)


def measure_reload(
    ctx: BenchContext, app_root: Path, preroll_jobs: int, settle_seconds: float
) -> dict:
    """Reload a pool under a stream of foreground jobs and return what the reload cost.

    Returns the jobs failed and lost, the seconds from SIGHUP until every child runs the
    new code, and the lowest worker count of any task that gearmand showed from SIGHUP
    until ``settle_seconds`` after the reload completed.
    """
    write_app(app_root, "v1")
    workers = ",".join(f"{task}={CHILDREN_PER_TASK}" for task in TASKS)
    group = ctx.start_pool(
        workers,
        extra_path=[str(app_root)],
        # Without bytecode files, the edit below cannot leave a stale .pyc of the same size
        # and modification second in place.
        extra_env={"BENCH_EXTRA_APPS": APP_NAME, "PYTHONDONTWRITEBYTECODE": "1"},
        label="reload pool",
    )
    for task in TASKS:
        ctx.wait_registered(group, task, CHILDREN_PER_TASK)
    master_pid = group.processes[0].pid
    old_children = set(group.member_pids()) - {master_pid}

    sampler = WorkerSampler(ctx.server_address)
    streams = [JobStream(ctx.server_address, task) for task in TASKS]
    sampler.start()
    for stream in streams:
        stream.start()
    try:
        wait_until(
            lambda: all(len(stream.results) >= preroll_jobs for stream in streams),
            RELOAD_TIMEOUT,
            "jobs to flow before the reload",
            check=group.check_alive,
        )

        write_app(app_root, "v2")
        hup_at = time.monotonic()
        os.kill(master_pid, signal.SIGHUP)

        def reload_complete():
            if sampler.error is not None:
                raise BenchError(f"the worker sampler failed: {sampler.error}")
            children = set(group.member_pids()) - {master_pid}
            if children & old_children:
                return None
            for sampled_at, _, pids in reversed(sampler.samples):
                if sampled_at < hup_at:
                    return None
                if all(
                    len(pids[task]) == CHILDREN_PER_TASK and not pids[task] & old_children
                    for task in TASKS
                ):
                    return sampled_at
            return None

        done_at = wait_until(
            reload_complete,
            RELOAD_TIMEOUT,
            "every child to run the new code",
            check=group.check_alive,
        )
        time.sleep(settle_seconds)
    finally:
        for stream in streams:
            stream.stop()
        sampler.stop()

    results = [result for stream in streams for result in stream.results]
    unexpected = [result for result in results if result not in (b"v1", b"v2")]
    stale = [stream.task for stream in streams if not stream.results or stream.results[-1] != b"v2"]
    if stale:
        raise BenchError(f"the last job of {', '.join(stale)} did not return v2 after the reload")
    # A foreground job whose client gave up stays queued in gearmand, so a job left in the
    # queue after the streams stopped is one that the streams counted as lost.
    left_queued = sum(ctx.task_status(task)[0] for task in TASKS)

    window = [
        (sampled_at, counts, pids)
        for sampled_at, counts, pids in sampler.samples
        if sampled_at >= hup_at
    ]
    lowest = min(min(counts.get(task, 0) for task in TASKS) for _, counts, _ in window)
    # Each sample that showed a task below its configured count, for the JSON details.
    dips = [
        {
            "seconds_after_sighup": round(sampled_at - hup_at, 3),
            "task": task,
            "workers": counts.get(task, 0),
            "pids": sorted(pids[task]),
        }
        for sampled_at, counts, pids in window
        for task in TASKS
        if counts.get(task, 0) < CHILDREN_PER_TASK
    ]

    group.terminate()
    for task in TASKS:
        ctx.wait_unregistered(task)
    return {
        "jobs": len(results),
        "failed": sum(len(stream.failed) for stream in streams) + len(unexpected),
        "lost": sum(len(stream.lost) for stream in streams),
        "left_queued": left_queued,
        "reload_seconds": done_at - hup_at,
        "lowest_serving": lowest,
        "dips": dips[:10],
        "samples": len(window),
        "failure_messages": [
            message for stream in streams for message in stream.failed + stream.lost
        ][:10],
    }
