"""Start and stop the measured worker processes, and read gearmand's view of them.

Every process starts in its own session with stdout and stderr in a log file of the run's
work directory, so that a failure can show its log. BenchContext remembers every process it
started and kills what is left when the run ends.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from gearman_pool.server_info import AdminClient

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PROJECT_DIR = BENCH_DIR / "project"
SETTINGS_MODULE = "bench_settings"

# Seconds that a group of workers may take to register at gearmand, or to exit after SIGTERM.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
# Seconds between two polls of gearmand's admin protocol while waiting for a state.
POLL_INTERVAL = 0.01
LOG_TAIL_CHARS = 3000


class BenchError(RuntimeError):
    """A benchmark could not be measured because a process died or a wait timed out."""


def wait_until(
    predicate, timeout: float, message: str, interval: float = POLL_INTERVAL, check=None
):
    """Call ``predicate`` until it returns a true value, and return that value.

    ``check`` runs before each call and raises to abort the wait (a worker that died).
    Raises BenchError naming ``message`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {message}")
        time.sleep(interval)


def read_tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-LOG_TAIL_CHARS:].strip()


class ProcessGroup:
    """The worker processes of one side of a measurement.

    A pool group contains one process, the master, and counts the master's children as
    members. A group of separate workers contains every process that it started.
    """

    def __init__(
        self, label: str, processes: list[subprocess.Popen], log_paths: list[Path], pool: bool
    ):
        self.label = label
        self.processes = processes
        self.log_paths = log_paths
        self.pool = pool

    def member_pids(self) -> list[int]:
        """Return the pids whose memory and CPU time count.

        These are the master and its children for a pool, and every process otherwise.
        """
        pids = [process.pid for process in self.processes]
        if self.pool:
            with contextlib.suppress(psutil.NoSuchProcess):
                pids += [child.pid for child in psutil.Process(self.processes[0].pid).children()]
        return pids

    def check_alive(self) -> None:
        """Raise BenchError with the log of the first process that has exited."""
        for process, log_path in zip(self.processes, self.log_paths, strict=True):
            if process.poll() is not None:
                raise BenchError(
                    f"{self.label}: process {process.pid} exited with code {process.returncode}; "
                    f"end of {log_path}:\n{read_tail(log_path)}"
                )

    def terminate(self) -> float:
        """Send SIGTERM to every process and return the seconds until the last one exited.

        Raises BenchError when one does not exit within STOP_TIMEOUT seconds or exits non-zero.
        """
        started = time.monotonic()
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            remaining = max(0.0, STOP_TIMEOUT - (time.monotonic() - started))
            try:
                process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                raise BenchError(
                    f"{self.label}: process {process.pid} still runs "
                    f"{STOP_TIMEOUT:g} s after SIGTERM"
                ) from None
        elapsed = time.monotonic() - started
        for process, log_path in zip(self.processes, self.log_paths, strict=True):
            if process.returncode != 0:
                raise BenchError(
                    f"{self.label}: process {process.pid} exited with code {process.returncode} "
                    f"after SIGTERM; end of {log_path}:\n{read_tail(log_path)}"
                )
        return elapsed

    def kill(self) -> None:
        """SIGKILL every process and its descendants that still run, and reap them."""
        for process in self.processes:
            if process.poll() is not None:
                continue
            try:
                descendants = psutil.Process(process.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                descendants = []
            process.kill()
            for descendant in descendants:
                with contextlib.suppress(psutil.NoSuchProcess):
                    descendant.kill()
            process.wait()
            psutil.wait_procs(descendants, timeout=5)


class BenchContext:
    """The gearmand address, the work directory and every process that a run started."""

    def __init__(self, server_address: str, work_dir: Path):
        self.server_address = server_address
        self.work_dir = work_dir
        self.admin = AdminClient(server_address, io_timeout=5.0)
        self.groups: list[ProcessGroup] = []
        self._counter = itertools.count(1)

    def close(self) -> None:
        for group in self.groups:
            group.kill()
        self.admin.close()

    # ---- environment -------------------------------------------------------------

    def base_env(self, python_path: list[str]) -> dict[str, str]:
        env = dict(os.environ)
        if env.get("PYTHONPATH"):
            python_path = [*python_path, env["PYTHONPATH"]]
        env["PYTHONPATH"] = os.pathsep.join(python_path)
        env["BENCH_GEARMAN_SERVER"] = self.server_address
        return env

    def django_env(
        self, extra_path: list[str] = (), extra_env: dict[str, str] | None = None
    ) -> dict[str, str]:
        env = self.base_env([*extra_path, str(PROJECT_DIR), str(REPO_ROOT)])
        env["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
        env["BENCH_DB_PATH"] = str(self.work_dir / "bench.sqlite3")
        if extra_env:
            env.update(extra_env)
        return env

    def spawn(
        self, label: str, args: list[str], env: dict[str, str]
    ) -> tuple[subprocess.Popen, Path]:
        log_path = self.work_dir / f"{next(self._counter):04d}-{label.replace(' ', '_')}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                args,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return process, log_path

    def control_socket_path(self) -> str:
        # The work directory is in the system temp directory, so the path stays far below the
        # 107-byte limit of a unix socket path.
        return str(self.work_dir / f"pool-{next(self._counter)}.sock")

    # ---- the sides -------------------------------------------------------------------

    def start_pool(
        self, workers: str, *options: str, extra_path=(), extra_env=None, label="pool"
    ) -> ProcessGroup:
        """Start ``manage.py gearman_pool --workers WORKERS`` of the benchmark project."""
        args = [
            sys.executable,
            "-m",
            "django",
            "gearman_pool",
            "--workers",
            workers,
            "--control-socket",
            self.control_socket_path(),
            *options,
        ]
        process, log_path = self.spawn(label, args, self.django_env(list(extra_path), extra_env))
        return self._register(ProcessGroup(label, [process], [log_path], pool=True))

    def start_worker_commands(self, task: str, count: int, label="separate") -> ProcessGroup:
        """Start ``count`` processes of ``manage.py gearman_worker_<task>`` at once."""
        args = [sys.executable, "-m", "django", f"gearman_worker_{task}"]
        return self._start_many(label, args, count, self.django_env())

    def start_bare_workers(self, task: str, count: int, label="bare loop") -> ProcessGroup:
        """Start ``count`` bare GearmanWorker loops without Django."""
        args = [sys.executable, str(BENCH_DIR / "bare_worker.py"), self.server_address, task]
        return self._start_many(label, args, count, self.base_env([str(REPO_ROOT)]))

    def start_pygearman_workers(self, task: str, count: int, label="pygearman") -> ProcessGroup:
        """Start ``count`` pygearman 0.2.6 workers."""
        args = [sys.executable, str(BENCH_DIR / "pygearman_worker.py"), self.server_address, task]
        return self._start_many(label, args, count, self.base_env([]))

    def _start_many(
        self, label: str, args: list[str], count: int, env: dict[str, str]
    ) -> ProcessGroup:
        processes, log_paths = [], []
        for _ in range(count):
            process, log_path = self.spawn(label, args, env)
            processes.append(process)
            log_paths.append(log_path)
        return self._register(ProcessGroup(label, processes, log_paths, pool=False))

    def _register(self, group: ProcessGroup) -> ProcessGroup:
        self.groups.append(group)
        return group

    # ---- gearmand's view -------------------------------------------------------------

    def task_status(self, task: str) -> tuple[int, int, int]:
        """Return (total jobs, running jobs, workers) of ``task`` from gearmand's ``status``."""
        for status in self.admin.status():
            if status.task == task:
                return status.total, status.running, status.workers
        return 0, 0, 0

    def registered_workers(self, task: str) -> int:
        """Return how many connections gearmand's ``workers`` lists with ``task`` registered."""
        return sum(1 for worker in self.admin.workers() if task in worker.tasks)

    def wait_registered(self, group: ProcessGroup, task: str, count: int) -> float:
        """Return time.monotonic() once ``count`` workers of ``task`` are registered."""
        wait_until(
            lambda: self.registered_workers(task) >= count,
            START_TIMEOUT,
            f"{count} {group.label} workers of task {task!r} to register",
            check=group.check_alive,
        )
        return time.monotonic()

    def wait_unregistered(self, task: str) -> None:
        """Wait until gearmand lists no worker of ``task``, after a group stopped."""
        wait_until(
            lambda: self.registered_workers(task) == 0,
            STOP_TIMEOUT,
            f"the workers of {task!r} to disconnect",
        )
