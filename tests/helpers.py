"""Helpers shared by the tests that run real gearmand, workers and management commands."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid

from gearman_pool.address import ServerAddress
from gearman_pool.client import GearmanClient
from gearman_pool.connection import AdminConnection
from gearman_pool.jobs import build_worker
from gearman_pool.worker import GearmanWorker
from tests.gearmand import pick_free_port

# Seconds that a worker thread may take to stop once it was asked to.
WORKER_JOIN_TIMEOUT = 10.0
# Seconds a worker command child process may take to start and register its task.
WORKER_START_TIMEOUT = 30.0


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, message: str = "condition"):
    """Call ``predicate`` until it returns a true value and return that value.

    Raises AssertionError naming ``message`` when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {message}")
        time.sleep(interval)


def closed_port_address() -> ServerAddress:
    """Return a loopback address on which nothing listened when checked (never port 4730)."""
    return ServerAddress("127.0.0.1", pick_free_port())


def unique_task(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# gearmand's admin protocol


def admin_command(address: ServerAddress | str, command: bytes) -> list[bytes]:
    """Send an admin command and return its reply lines up to the closing "."."""
    if isinstance(address, str):
        address = ServerAddress.parse(address)
    with AdminConnection(address, io_timeout=5.0) as admin:
        admin.send_line(command)
        lines = []
        while True:
            line = admin.read_line()
            if line == b".":
                return lines
            lines.append(line)


def gearmand_status(address: ServerAddress | str) -> dict[str, tuple[int, int, int]]:
    """Return gearmand's `status` as {task: (total, running, workers)}."""
    status = {}
    for line in admin_command(address, b"status"):
        task, total, running, workers = line.decode("utf-8", "replace").split("\t")
        status[task] = (int(total), int(running), int(workers))
    return status


def queue_status(address: ServerAddress | str, task: bytes) -> tuple[int, int, int] | None:
    """Return (queued, running, available workers) of ``task``, or None when it is not listed."""
    return gearmand_status(address).get(task.decode("utf-8", "replace"))


def queued_jobs(address: str, task: str) -> int:
    return gearmand_status(address).get(task, (0, 0, 0))[0]


def worker_count(address: str, task: str) -> int:
    return gearmand_status(address).get(task, (0, 0, 0))[2]


def running_count(address: str, task: str) -> int:
    return gearmand_status(address).get(task, (0, 0, 0))[1]


# Workers in threads of the test process


def echo_handler(job):
    return job.data


class WorkerThread(threading.Thread):
    """Runs ``worker.work(max_jobs)`` and keeps its return value."""

    def __init__(self, worker: GearmanWorker, max_jobs: int | None = None):
        super().__init__(daemon=True)
        self.worker = worker
        self.max_jobs = max_jobs
        self.jobs_done: int | None = None

    def run(self):
        self.jobs_done = self.worker.work(max_jobs=self.max_jobs)


class EchoCommand:
    """Worker command with a test-chosen task name that returns the payload and raises on "raise"."""

    def __init__(self, task_name: str, job_data_encoding: str | None = "utf-8"):
        self.task_name = task_name
        self.job_data_encoding = job_data_encoding
        self.received = []

    def do_job(self, job_data):
        self.received.append(job_data)
        if job_data == "raise":
            raise ValueError("asked to raise")
        return job_data


@contextlib.contextmanager
def worker_thread(*commands):
    """Serve the commands' tasks with build_worker in a thread until the block ends."""
    worker = build_worker(commands)
    thread = threading.Thread(target=worker.work, name="gearman-test-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.request_stop()
        thread.join(WORKER_JOIN_TIMEOUT)
        assert not thread.is_alive(), "the worker thread did not stop"
        worker.close()


# Management commands in child processes


def start_worker_command(spawn_manage, address: str, command: str, task: str, *args: str):
    """Start a worker command child process and wait until gearmand lists its worker."""
    process = spawn_manage(command, *args, env={"GEARMAN_TEST_SERVER": address})

    def registered():
        if process.poll() is not None:
            raise AssertionError(f"{command} exited with {process.returncode}:\n{process.read_stderr()}")
        return worker_count(address, task) >= 1

    wait_until(
        registered, timeout=WORKER_START_TIMEOUT, message=f"gearmand to list a worker for {task!r}"
    )
    return process


def assert_one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("CommandError: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def table_rows(text: str) -> list[list[str]]:
    """Return the cells of every data and header row of prettytable output."""
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]


# gearman_pool in a child process


def start_pool(spawn_manage, server, *args):
    """Start the gearman_pool command with ``args``, serving jobs of the gearmand ``server``."""
    return spawn_manage("gearman_pool", *args, env={"GEARMAN_TEST_SERVER": server.address})


def child_pids(process) -> set[int]:
    # psutil is in the `test` extra, but conftest.py imports this module and works without it.
    import psutil

    try:
        return {child.pid for child in psutil.Process(process.pid).children()}
    except psutil.NoSuchProcess:
        return set()


def submit(server, task: str, data: bytes = b"", background: bool = True, timeout: float | None = 30):
    """Submit a job to the gearmand ``server`` (a GearmandProcess) and return its JobResult."""
    with GearmanClient([ServerAddress.parse(server.address)]) as client:
        return client.submit_job(task.encode(), data, background=background, timeout=timeout)
