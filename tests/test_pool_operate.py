"""Operating a running pool: recycling, limits, scaling, status and a local gearmand."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from gearman_pool.address import ServerAddress
from gearman_pool.client import GearmanClient
from gearman_pool.errors import GearmanError
from tests.conftest import REPO_ROOT
from tests.gearmand import pick_free_port
from tests.helpers import child_pids, running_count, wait_until, worker_count


def start_pool(spawn_manage, server, *args, control_socket=None):
    env = {"GEARMAN_TEST_SERVER": server.address}
    if control_socket is not None:
        env["GEARMAN_POOL_TEST_CONTROL_SOCKET"] = control_socket
    return spawn_manage("gearman_pool", *args, env=env)


def run_job(address: str, task: str, data: bytes = b"", timeout: float = 30) -> bytes:
    with GearmanClient([ServerAddress.parse(address)]) as client:
        return client.submit_job(task.encode(), data, background=False, timeout=timeout).result


def workers_or_zero(address: str, task: str) -> int:
    """worker_count(), but 0 while nothing listens at the address yet."""
    try:
        return worker_count(address, task)
    except GearmanError:
        return 0


def manage_output(*args: str, control_socket: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), GEARMAN_POOL_TEST_CONTROL_SOCKET=control_socket)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "-m", "django", *args, "--settings=tests.settings"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def control_socket():
    path = f"/tmp/gp-test-{os.getpid()}-{time.monotonic_ns()}.sock"
    yield path
    if os.path.exists(path):
        os.unlink(path)


def test_max_jobs_recycles_without_loss(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "pid=1", "--max-jobs", "5")
    wait_until(lambda: worker_count(private_gearmand.address, "pid") == 1, message="a pid worker")

    served_by = [run_job(private_gearmand.address, "pid") for _ in range(24)]

    # 5 jobs plus at most 10 % jitter (0 extra for 5) per child: at least 4 children.
    assert len(served_by) == 24
    assert len(set(served_by)) >= 4
    log = pool.read_stderr()
    assert "recycled: max_jobs 5 reached after 5 jobs" in log
    assert "recycled (max_jobs 5 reached" in log
    assert "restarting in" not in log
    assert pool.poll() is None


def test_max_memory_recycles_between_jobs(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "hog=1", "--max-memory", "60M")
    wait_until(lambda: worker_count(private_gearmand.address, "hog") == 1, message="a hog worker")
    (first_child,) = child_pids(pool)

    results = [run_job(private_gearmand.address, "hog", b"20") for _ in range(6)]

    # Every job completed; the first child left once its memory passed 60 MiB.
    assert len(results) == 6
    assert results[0] == str(first_child).encode()
    assert len(set(results)) >= 2
    log = pool.read_stderr()
    assert "above max_memory 60.0 MiB" in log
    assert "restarting in" not in log


def test_memory_limit_below_fresh_child(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "hog=1", "--max-memory", "1M")
    wait_until(lambda: worker_count(private_gearmand.address, "hog") == 1, message="a hog worker")
    (child,) = child_pids(pool)

    for _ in range(3):
        assert run_job(private_gearmand.address, "hog", b"1") == str(child).encode()

    log = pool.read_stderr()
    assert "above max_memory 1.0 MiB; not recycling it for memory" in log
    assert "recycled" not in log


def test_job_timeout_kills_and_refills(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "sleep=1", "--job-timeout", "1")
    wait_until(lambda: worker_count(private_gearmand.address, "sleep") == 1, message="a sleep worker")
    (child,) = child_pids(pool)
    with GearmanClient([ServerAddress.parse(private_gearmand.address)]) as client:
        handle = client.submit_job(b"sleep", b"30").handle

    wait_until(lambda: f"job {handle} ran" in pool.read_stderr(), timeout=10, message="the job timeout")
    wait_until(lambda: (pids := child_pids(pool)) and child not in pids, message="a new child")

    log = pool.read_stderr()
    assert f"Child {child} of task 'sleep': job {handle} ran 1." in log
    assert "over job_timeout 1 s; killing the child" in log
    assert "killed by SIGKILL (job" in log
    wait_until(lambda: worker_count(private_gearmand.address, "sleep") == 1, message="the slot refilled")


def test_job_timeout_below_one_second(spawn_manage, private_gearmand):
    """A sub-second job_timeout is enforced near its deadline, although the master learns
    of job starts from the scoreboard rather than from a message per job."""
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "sleep=1", "--job-timeout", "0.5")
    wait_until(lambda: worker_count(private_gearmand.address, "sleep") == 1, message="a sleep worker")
    with GearmanClient([ServerAddress.parse(private_gearmand.address)]) as client:
        handle = client.submit_job(b"sleep", b"0.9").handle

    wait_until(lambda: f"job {handle} ran" in pool.read_stderr(), timeout=10, message="the job timeout")

    match = re.search(rf"job {re.escape(handle)} ran ([0-9.]+) s, over job_timeout 0.5 s", pool.read_stderr())
    assert match is not None
    assert float(match.group(1)) < 0.7


def test_child_keeps_one_scoreboard_descriptor(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "echo=3")
    wait_until(lambda: worker_count(private_gearmand.address, "echo") == 3, message="3 echo workers")

    for pid in child_pids(pool):
        targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        slots = [target for target in targets if "gearman_pool-scoreboard" in target]
        assert len(slots) == 1, f"child {pid} has scoreboard descriptors {slots}"


def test_ttin_ttou_change_counts(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "echo=2,pid=1")
    wait_until(lambda: worker_count(private_gearmand.address, "echo") == 2, message="2 echo workers")

    pool.send_signal(signal.SIGTTIN)
    wait_until(
        lambda: worker_count(private_gearmand.address, "echo") == 3 and worker_count(private_gearmand.address, "pid") == 2,
        message="one more child of every task",
    )
    pool.send_signal(signal.SIGTTOU)
    wait_until(
        lambda: worker_count(private_gearmand.address, "echo") == 2 and worker_count(private_gearmand.address, "pid") == 1,
        message="the configured counts again",
    )
    wait_until(lambda: len(child_pids(pool)) == 3, message="3 children")
    assert "Scaling task 'echo' from 2 to 3 children" in pool.read_stderr()


def test_status_lists_busy_child(spawn_manage, private_gearmand, control_socket):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "sleep=1,echo=2", control_socket=control_socket)
    wait_until(lambda: worker_count(private_gearmand.address, "echo") == 2, message="2 echo workers")
    with GearmanClient([ServerAddress.parse(private_gearmand.address)]) as client:
        handle = client.submit_job(b"sleep", b"5").handle
    wait_until(lambda: running_count(private_gearmand.address, "sleep") == 1, message="the job to start")
    time.sleep(0.3)

    result = manage_output("gearman_pool_status", "--json", control_socket=control_socket)
    table = manage_output("gearman_pool_status", control_socket=control_socket)

    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["master"]["pid"] == pool.pid
    assert sorted(row["pid"] for row in status["children"]) == sorted(child_pids(pool))
    busy = [row for row in status["children"] if row["state"] == "busy"]
    assert len(busy) == 1
    assert busy[0]["task"] == "sleep"
    assert busy[0]["job_handle"] == handle
    assert busy[0]["job_seconds"] > 0
    assert {row["state"] for row in status["children"] if row["task"] == "echo"} == {"ready"}
    assert status["totals"]["children"] == 3
    assert table.returncode == 0
    assert handle in table.stdout


def test_scale_command_changes_count(spawn_manage, private_gearmand, control_socket):
    start_pool(spawn_manage, private_gearmand, "--workers", "echo=1", control_socket=control_socket)
    wait_until(lambda: worker_count(private_gearmand.address, "echo") == 1, message="1 echo worker")

    result = manage_output("gearman_pool_scale", "echo=3", control_socket=control_socket)

    assert result.returncode == 0, result.stderr
    assert "echo: 1 -> 3 children" in result.stdout
    wait_until(lambda: worker_count(private_gearmand.address, "echo") == 3, message="3 echo workers")

    result = manage_output("gearman_pool_scale", "gearman_worker_echo=-2", control_socket=control_socket)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: worker_count(private_gearmand.address, "echo") == 1, message="1 echo worker again")


def test_with_gearmand_runs_whole_stack(spawn_manage, tmp_path):
    address = f"127.0.0.1:{pick_free_port()}"
    pool = spawn_manage(
        "gearman_pool", "--workers", "echo=2", "--with-gearmand", env={"GEARMAN_TEST_SERVER": address}
    )
    wait_until(lambda: workers_or_zero(address, "echo") == 2, timeout=20, message="2 echo workers")
    gearmand = [process for process in psutil.Process(pool.pid).children() if process.name() == "gearmand"]
    assert len(gearmand) == 1

    assert run_job(address, "echo", "Příliš 日本".encode()) == "Příliš 日本".encode()

    gearmand[0].kill()
    wait_until(lambda: "restarting it in" in pool.read_stderr(), message="the gearmand restart")
    wait_until(lambda: workers_or_zero(address, "echo") == 2, timeout=20, message="workers back on the new gearmand")
    assert run_job(address, "echo", b"again") == b"again"

    started = time.monotonic()
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(timeout=30) == 0
    # gearmand stops on its SIGTERM at once; a blocked signal would cost a 5 s SIGKILL delay.
    assert time.monotonic() - started < 4
    log = pool.read_stderr()
    assert log.index("of task 'echo' exited") < log.rindex("gearmand")
    assert "exited with code 0" in log[log.rindex("gearmand") - 200 :]
    assert not [process for process in psutil.process_iter(["cmdline"]) if f"--port={address.rsplit(':', 1)[1]}" in
                " ".join(process.info["cmdline"] or [])]


def test_with_gearmand_missing_binary(monkeypatch, settings):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from gearman_pool.pool import gearmand as gearmand_module

    monkeypatch.setattr(gearmand_module.shutil, "which", lambda name: None)
    monkeypatch.setattr(gearmand_module.os, "access", lambda path, mode: False)
    settings.GEARMAN_SERVERS = [f"127.0.0.1:{pick_free_port()}"]

    with pytest.raises(CommandError, match=r"apt-get install gearman-job-server"):
        call_command("gearman_pool", "--workers", "echo=1", "--with-gearmand")


def test_with_gearmand_rejects_remote_address(run_manage):
    result = run_manage(
        "gearman_pool", "--workers", "echo=1", "--with-gearmand", env={"GEARMAN_TEST_SERVER": "192.0.2.1:4730"}
    )

    assert result.returncode != 0
    assert "name a loopback address such as 127.0.0.1:4730 first" in result.stderr
    assert "Spawned child" not in result.stderr


def test_with_gearmand_stops_promptly(spawn_manage):
    address = f"127.0.0.1:{pick_free_port()}"
    pool = spawn_manage("gearman_pool", "--workers", "echo=1", "--with-gearmand", env={"GEARMAN_TEST_SERVER": address})
    wait_until(lambda: workers_or_zero(address, "echo") == 1, timeout=20, message="an echo worker")

    started = time.monotonic()
    pool.send_signal(signal.SIGTERM)

    assert pool.wait(timeout=30) == 0
    # The gearmand started with the master must not inherit the signals the master held
    # blocked during start-up, or it would ignore SIGTERM until the 5 s SIGKILL.
    assert time.monotonic() - started < 4
    assert "killed by SIGKILL" not in pool.read_stderr()
