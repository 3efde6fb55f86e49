"""Code reload on SIGHUP, against a real gearmand and worker code edited on disk."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from gearman_pool.address import ServerAddress
from gearman_pool.client import GearmanClient
from gearman_pool.errors import GearmanError
from tests.conftest import REPO_ROOT
from tests.helpers import child_pids, submit, wait_until, worker_count

WORKER_TEMPLATE = '''
from gearman_pool import GearmanWorkerBaseCommand


class Command(GearmanWorkerBaseCommand):
    task_name = "hot"

    def do_job(self, job_data):
        return {result!r}
'''


@pytest.fixture
def hot_app(tmp_path: Path):
    """An installed app in tmp_path whose gearman_worker_hot returns a chosen string."""
    commands = tmp_path / "hotapp" / "management" / "commands"
    commands.mkdir(parents=True)
    for package in (tmp_path / "hotapp", tmp_path / "hotapp" / "management", commands):
        (package / "__init__.py").write_text("")
    module = commands / "gearman_worker_hot.py"

    def write(result: str | None = None, source: str | None = None) -> Path:
        module.write_text(source if source is not None else WORKER_TEMPLATE.format(result=result))
        return module

    write("v1")
    return write


def start_hot_pool(spawn_manage, server, tmp_path, *args):
    return spawn_manage(
        "gearman_pool",
        *args,
        env={
            "GEARMAN_TEST_SERVER": server.address,
            "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}",
            "TEST_EXTRA_APPS": "hotapp",
            # Edits within one second can keep a stale .pyc whose recorded mtime matches.
            "PYTHONDONTWRITEBYTECODE": "1",
        },
    )


def run_hot(server) -> bytes:
    return submit(server, "hot", background=False, timeout=10).result


class JobStream(threading.Thread):
    """Submits foreground jobs back to back and counts how they end."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server = server
        self.stopped = threading.Event()
        self.results: list[bytes] = []
        self.errors: list[str] = []

    def run(self):
        with GearmanClient([ServerAddress.parse(self.server.address)]) as client:
            while not self.stopped.is_set():
                try:
                    self.results.append(client.submit_job(b"hot", b"", background=False, timeout=15).result)
                except GearmanError as exc:
                    self.errors.append(str(exc))

    def stop(self):
        self.stopped.set()
        self.join(timeout=30)


def test_reload_serves_new_code_same_pid(spawn_manage, private_gearmand, hot_app, tmp_path):
    pool = start_hot_pool(spawn_manage, private_gearmand, tmp_path, "--workers", "hot=2")
    wait_until(lambda: worker_count(private_gearmand.address, "hot") == 2, message="2 hot workers")
    assert run_hot(private_gearmand) == b"v1"
    old_children = child_pids(pool)
    stream = JobStream(private_gearmand)
    stream.start()
    wait_until(lambda: len(stream.results) >= 20, message="jobs flowing before the reload")

    hot_app("v2")
    pool.send_signal(signal.SIGHUP)
    wait_until(lambda: stream.results and stream.results[-1] == b"v2", timeout=20, message="v2 results")
    wait_until(lambda: not (child_pids(pool) & old_children), timeout=20, message="old children to exit")
    time.sleep(0.5)
    stream.stop()

    assert pool.poll() is None
    assert psutil.Process(pool.pid).is_running()
    assert stream.errors == []
    assert set(stream.results) <= {b"v1", b"v2"}
    assert run_hot(private_gearmand) == b"v2"
    assert len(child_pids(pool)) == 2
    assert worker_count(private_gearmand.address, "hot") == 2
    assert "Reload: every task is served by new children" in pool.read_stderr()


def test_reload_syntax_error_keeps_old_children(spawn_manage, private_gearmand, hot_app, tmp_path):
    pool = start_hot_pool(spawn_manage, private_gearmand, tmp_path, "--workers", "hot=2")
    wait_until(lambda: worker_count(private_gearmand.address, "hot") == 2, message="2 hot workers")
    children = child_pids(pool)

    module = hot_app(source="from gearman_pool import GearmanWorkerBaseCommand\n\nclass Command(:\n    pass\n")
    pool.send_signal(signal.SIGHUP)
    wait_until(lambda: "Reload aborted" in pool.read_stderr(), timeout=20, message="the reload to abort")

    log = pool.read_stderr()
    assert f"{module}, line 3" in log
    assert "SyntaxError" in log
    assert child_pids(pool) == children
    assert run_hot(private_gearmand) == b"v1"


def test_reload_rereads_worker_counts(spawn_manage, private_gearmand, hot_app, tmp_path):
    settings_module = tmp_path / "hot_counts_settings.py"
    settings_module.write_text("from tests.settings import *  # noqa: F403\nGEARMAN_POOL_WORKERS = {'hot': 1}\n")
    pool = spawn_manage(
        "gearman_pool",
        env={
            "GEARMAN_TEST_SERVER": private_gearmand.address,
            "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}",
            "TEST_EXTRA_APPS": "hotapp",
            "PYTHONDONTWRITEBYTECODE": "1",
            "DJANGO_SETTINGS_MODULE": "hot_counts_settings",
        },
        settings="hot_counts_settings",
    )
    wait_until(lambda: worker_count(private_gearmand.address, "hot") == 1, message="1 hot worker")

    settings_module.write_text("from tests.settings import *  # noqa: F403\nGEARMAN_POOL_WORKERS = {'hot': 3}\n")
    pool.send_signal(signal.SIGHUP)

    wait_until(lambda: worker_count(private_gearmand.address, "hot") == 3, timeout=20, message="3 hot workers")
    wait_until(lambda: len(child_pids(pool)) == 3, timeout=20, message="3 children")


def test_reload_burst_of_hups_coalesces(spawn_manage, private_gearmand, hot_app, tmp_path):
    pool = start_hot_pool(spawn_manage, private_gearmand, tmp_path, "--workers", "hot=2")
    wait_until(lambda: worker_count(private_gearmand.address, "hot") == 2, message="2 hot workers")
    stream = JobStream(private_gearmand)
    stream.start()

    hot_app("v3")
    for _ in range(10):
        pool.send_signal(signal.SIGHUP)
        time.sleep(0.02)
    wait_until(lambda: "every task is served by new children" in pool.read_stderr(), timeout=30)
    # At most one more reload follows the burst; wait until the pool is quiet again.
    time.sleep(3)
    wait_until(lambda: len(child_pids(pool)) == 2, timeout=30, message="2 children after the burst")
    stream.stop()

    log = pool.read_stderr()
    assert log.count("Reload requested") <= 2
    assert stream.errors == []
    assert run_hot(private_gearmand) == b"v3"
    assert worker_count(private_gearmand.address, "hot") == 2
    assert pool.poll() is None


FAILING_START_TEMPLATE = '''
from gearman_pool import GearmanWorkerBaseCommand


class Command(GearmanWorkerBaseCommand):
    task_name = "hot"

    def prepare_worker(self):
        raise RuntimeError("database password missing")

    def do_job(self, job_data):
        return "broken"
'''


def test_reload_recovers_after_failed_start(spawn_manage, private_gearmand, hot_app, tmp_path):
    pool = start_hot_pool(
        spawn_manage,
        private_gearmand,
        tmp_path,
        "--workers",
        "hot=2",
        "--max-boot-failures",
        "2",
        "--max-restart-delay",
        "0.2",
    )
    wait_until(lambda: worker_count(private_gearmand.address, "hot") == 2, message="2 hot workers")
    old_children = child_pids(pool)

    # The new code imports fine, so the check passes, but every new child fails at start.
    hot_app(source=FAILING_START_TEMPLATE)
    pool.send_signal(signal.SIGHUP)
    wait_until(lambda: "Reload incomplete" in pool.read_stderr(), timeout=30, message="the stalled reload")
    assert old_children <= child_pids(pool)
    assert run_hot(private_gearmand) == b"v1"

    hot_app("v4")
    pool.send_signal(signal.SIGHUP)
    wait_until(lambda: run_hot(private_gearmand) == b"v4", timeout=30, message="v4 results")
    wait_until(lambda: not (child_pids(pool) & old_children), timeout=30, message="old children to exit")
    wait_until(lambda: len(child_pids(pool)) == 2, timeout=30, message="2 children")
    assert worker_count(private_gearmand.address, "hot") == 2
    assert pool.poll() is None
