"""gearman_pool against a real gearmand, with real forked children."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import psutil
import pytest

from tests.helpers import (
    child_pids,
    gearmand_status,
    running_count,
    start_pool,
    submit,
    wait_until,
    worker_count,
)


def test_pool_registers_configured_counts(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "echo=2,gearman_worker_sleep=1")

    wait_until(
        lambda: worker_count(private_gearmand.address, "echo") == 2
        and worker_count(private_gearmand.address, "sleep") == 1,
        message="2 echo and 1 sleep workers",
    )
    assert len(child_pids(pool)) == 3
    assert submit(private_gearmand, "echo", "Příliš 日本".encode(), background=False).result == "Příliš 日本".encode()


def test_pool_replaces_killed_child(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "echo=2")
    wait_until(lambda: worker_count(private_gearmand.address, "echo") == 2, message="2 echo workers")
    original = child_pids(pool)
    victim = min(original)

    os.kill(victim, signal.SIGKILL)

    replaced = wait_until(
        lambda: (pids := child_pids(pool)) and len(pids) == 2 and victim not in pids and pids,
        message="a replacement child",
    )
    assert replaced - original
    wait_until(lambda: worker_count(private_gearmand.address, "echo") == 2, message="2 echo workers again")
    assert "killed by SIGKILL" in pool.read_stderr()


def test_pool_sigterm_lets_running_job_finish(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "sleep=1")
    wait_until(lambda: worker_count(private_gearmand.address, "sleep") == 1, message="a sleep worker")
    outcome = {}

    def run_job():
        result = submit(private_gearmand, "sleep", b"2", background=False)
        outcome["result"] = result.result
        outcome["finished_at"] = time.monotonic()

    client_thread = threading.Thread(target=run_job)
    client_thread.start()
    wait_until(lambda: running_count(private_gearmand.address, "sleep") == 1, message="the job to start")

    pool.send_signal(signal.SIGTERM)
    exit_code = pool.wait(timeout=30)
    exited_at = time.monotonic()
    client_thread.join(timeout=30)

    assert exit_code == 0
    assert outcome["result"].isdigit()
    assert outcome["finished_at"] <= exited_at
    assert "exiting; jobs done: 1" in pool.read_stderr()


def test_pool_sigterm_idle_stops_promptly(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "echo=3")
    wait_until(lambda: worker_count(private_gearmand.address, "echo") == 3, message="3 echo workers")
    children = child_pids(pool)

    started = time.monotonic()
    pool.send_signal(signal.SIGTERM)
    exit_code = pool.wait(timeout=10)

    assert exit_code == 0
    assert time.monotonic() - started < 3
    assert not [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


def test_pool_graceful_timeout_kills_stubborn_child(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "stubborn=1", "--graceful-timeout", "2")
    wait_until(lambda: worker_count(private_gearmand.address, "stubborn") == 1, message="a stubborn worker")
    submit(private_gearmand, "stubborn", b"60")
    wait_until(lambda: running_count(private_gearmand.address, "stubborn") == 1, message="the job to start")

    started = time.monotonic()
    pool.send_signal(signal.SIGTERM)
    exit_code = pool.wait(timeout=20)

    assert exit_code == 0
    assert 1.5 < time.monotonic() - started < 10
    assert "killed by SIGKILL" in pool.read_stderr()


def test_pool_children_reconnect_after_gearmand_restart(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "echo=2")
    wait_until(lambda: worker_count(private_gearmand.address, "echo") == 2, message="2 echo workers")
    children = child_pids(pool)

    private_gearmand.stop()
    time.sleep(5)
    private_gearmand.start()

    wait_until(
        lambda: worker_count(private_gearmand.address, "echo") == 2,
        timeout=15,
        message="both children to register again",
    )
    assert submit(private_gearmand, "echo", b"after restart", background=False).result == b"after restart"
    assert child_pids(pool) == children
    assert pool.poll() is None


@pytest.mark.parametrize(
    ("workers", "expected"),
    [
        ("nosuch=2", "unknown worker 'nosuch'"),
        ("echo", "entry 'echo' has no count; expected NAME=COUNT"),
        ("echo=two", "count 'two' for 'echo' is not an integer"),
        ("echo=0", "count 0 for 'echo' is below 1"),
        ("echo=-1", "count -1 for 'echo' is below 1"),
        ("echo=1,gearman_worker_echo=2", "repeats 'echo'"),
        ("", "--workers is empty"),
        ("echo=1,,sleep=1", "empty entry"),
    ],
)
def test_pool_rejects_bad_workers_option(run_manage, private_gearmand, workers, expected):
    result = run_manage("gearman_pool", f"--workers={workers}", env={"GEARMAN_TEST_SERVER": private_gearmand.address})

    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert "Spawned child" not in result.stderr
    if "NAME=COUNT" not in expected and "empty" not in expected:
        assert "Valid names: " in result.stderr
        assert "echo (gearman_worker_echo)" in result.stderr
    assert gearmand_status(private_gearmand.address) == {}


def test_pool_master_sigkill_leaves_no_children(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "echo=2,sleep=1")
    wait_until(lambda: len(child_pids(pool)) == 3 and worker_count(private_gearmand.address, "echo") == 2)
    children = [psutil.Process(pid) for pid in child_pids(pool)]
    submit(private_gearmand, "sleep", b"30")

    pool.kill()
    pool.wait()

    _exited, alive = psutil.wait_procs(children, timeout=2)
    assert alive == []


def test_pool_child_inherits_frozen_objects(spawn_manage, private_gearmand):
    """The master's objects stay frozen in each child, out of reach of its garbage collector."""
    start_pool(spawn_manage, private_gearmand, "--workers", "gcstate=1")
    wait_until(lambda: worker_count(private_gearmand.address, "gcstate") == 1, message="a gcstate worker")

    result = submit(private_gearmand, "gcstate", b"", background=False)

    assert json.loads(result.result)["frozen"] > 10_000
