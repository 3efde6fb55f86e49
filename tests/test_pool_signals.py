"""How the pool master and its children react to signals, crashes and a pid file."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

from tests.conftest import REPO_ROOT, kill_process_tree, manage_command, manage_env
from tests.helpers import child_pids, running_count, start_pool, submit, wait_until, worker_count


def foreground_in_thread(server, task: str, data: bytes, outcome: dict) -> threading.Thread:
    def run():
        outcome["result"] = submit(server, task, data, background=False, timeout=60).result

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_second_sigint_stops_now(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "stubborn=1")
    wait_until(lambda: worker_count(private_gearmand.address, "stubborn") == 1)
    submit(private_gearmand, "stubborn", b"60")
    wait_until(lambda: running_count(private_gearmand.address, "stubborn") == 1, message="the job to start")

    pool.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert pool.poll() is None
    started = time.monotonic()
    pool.send_signal(signal.SIGINT)

    assert pool.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    assert "stopping now" in pool.read_stderr()
    assert "killed by SIGKILL" in pool.read_stderr()


def test_sigquit_stops_now(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "stubborn=1")
    wait_until(lambda: worker_count(private_gearmand.address, "stubborn") == 1)
    submit(private_gearmand, "stubborn", b"60")
    wait_until(lambda: running_count(private_gearmand.address, "stubborn") == 1, message="the job to start")

    pool.send_signal(signal.SIGQUIT)

    assert pool.wait(timeout=10) == 0
    assert "killed by SIGKILL" in pool.read_stderr()


def test_group_sigint_and_sighup_reach_only_master(private_gearmand, tmp_path, gearmand_address):
    # Ctrl-C in a terminal signals the whole foreground process group. The pool runs in a
    # group of its own, so that the test can do the same without hitting pytest.
    stderr_path = tmp_path / "pool.stderr"
    with open(stderr_path, "wb") as stderr:
        pool = subprocess.Popen(
            manage_command(["gearman_pool", "--workers", "sleep=2"]),
            cwd=REPO_ROOT,
            env=manage_env(gearmand_address, {"GEARMAN_TEST_SERVER": private_gearmand.address}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        wait_until(lambda: worker_count(private_gearmand.address, "sleep") == 2, message="2 sleep workers")
        children = child_pids(pool)

        os.killpg(pool.pid, signal.SIGHUP)
        # The master reloads; the children ignore the group's SIGHUP and are retired
        # with one SIGTERM each once their replacements are ready.
        wait_until(lambda: "every task is served by new children" in stderr_path.read_text(), timeout=20)
        wait_until(lambda: not (child_pids(pool) & children), timeout=20, message="old children to exit")
        wait_until(lambda: worker_count(private_gearmand.address, "sleep") == 2, message="2 new sleep workers")

        outcome = {}
        client = foreground_in_thread(private_gearmand, "sleep", b"2", outcome)
        wait_until(lambda: running_count(private_gearmand.address, "sleep") == 1, message="the job to start")
        os.killpg(pool.pid, signal.SIGINT)

        assert pool.wait(timeout=30) == 0
        client.join(timeout=30)
        assert outcome["result"].isdigit()
        log = stderr_path.read_text()
        assert log.count("Received SIGINT: stopping gracefully") == 1
        assert "killed by SIGHUP" not in log
        assert "killed by SIGINT" not in log
        assert "exited with code 0" in log
        assert "Traceback" not in log
    finally:
        kill_process_tree(pool)


def test_child_sigterm_finishes_job_and_is_replaced(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "sleep=1")
    wait_until(lambda: worker_count(private_gearmand.address, "sleep") == 1)
    (child,) = child_pids(pool)
    outcome = {}
    client = foreground_in_thread(private_gearmand, "sleep", b"2", outcome)
    wait_until(lambda: running_count(private_gearmand.address, "sleep") == 1, message="the job to start")

    os.kill(child, signal.SIGTERM)
    client.join(timeout=30)

    assert outcome["result"] == str(child).encode()
    replacement = wait_until(lambda: (pids := child_pids(pool)) and child not in pids and pids, message="a new child")
    assert len(replacement) == 1
    wait_until(lambda: worker_count(private_gearmand.address, "sleep") == 1)
    assert pool.poll() is None


def test_child_sigkill_mid_job_requeues(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "sleep=1")
    wait_until(lambda: worker_count(private_gearmand.address, "sleep") == 1)
    (child,) = child_pids(pool)
    outcome = {}
    client = foreground_in_thread(private_gearmand, "sleep", b"1", outcome)
    wait_until(lambda: running_count(private_gearmand.address, "sleep") == 1, message="the job to start")

    os.kill(child, signal.SIGKILL)
    client.join(timeout=30)

    # gearmand requeued the job when the child's connection closed, and the replacement ran it.
    assert outcome["result"].isdigit()
    assert int(outcome["result"]) != child
    assert int(outcome["result"]) in child_pids(pool)


def test_crashing_task_backs_off_others_serve(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "crashboot=1,echo=1")
    wait_until(lambda: worker_count(private_gearmand.address, "echo") == 1)

    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        assert submit(private_gearmand, "echo", b"still here", background=False, timeout=5).result == b"still here"
        time.sleep(0.2)

    log = pool.read_stderr()
    delays = [float(line.rsplit("restarting in ", 1)[1].split(" s")[0]) for line in log.splitlines()
              if "of task 'crashboot' exited with code 3; restarting in" in line]
    assert 3 <= len(delays) <= 6
    assert delays == sorted(delays)
    assert delays[-1] > 2 * delays[0]
    # One traceback per failed start, and a bounded number of lines for each.
    assert log.count("RuntimeError: cannot start: the test asked for it") == len(delays)
    assert len(log.splitlines()) < 40 * (len(delays) + 2)
    assert pool.poll() is None


def test_task_marked_failed_after_boot_failures(spawn_manage, private_gearmand):
    pool = start_pool(
        spawn_manage,
        private_gearmand,
        "--workers",
        "crashboot=1",
        "--max-boot-failures",
        "4",
        "--max-restart-delay",
        "0.2",
    )
    exit_code = pool.wait(timeout=60)
    log = pool.read_stderr()

    assert exit_code == 3
    assert "task 'crashboot' failed 4 times in a row at start" in log
    assert "Every task failed at start" in log


def test_pidfile_written_refused_removed(spawn_manage, run_manage, private_gearmand, tmp_path):
    pidfile = tmp_path / "pool.pid"
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "echo=1", "--pidfile", str(pidfile))
    wait_until(lambda: worker_count(private_gearmand.address, "echo") == 1)
    assert pidfile.read_text().strip() == str(pool.pid)

    second = run_manage(
        "gearman_pool", "--workers", "echo=1", "--pidfile", str(pidfile),
        env={"GEARMAN_TEST_SERVER": private_gearmand.address},
    )
    assert second.returncode != 0
    assert f"names running gearman_pool process {pool.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    assert worker_count(private_gearmand.address, "echo") == 1

    pool.send_signal(signal.SIGTERM)
    assert pool.wait(timeout=10) == 0
    assert not pidfile.exists()


def test_pidfile_unwritable_forks_nothing(run_manage, private_gearmand, tmp_path):
    result = run_manage(
        "gearman_pool", "--workers", "echo=1", "--pidfile", str(tmp_path / "missing" / "pool.pid"),
        env={"GEARMAN_TEST_SERVER": private_gearmand.address},
    )

    assert result.returncode != 0
    assert "cannot write pid file" in result.stderr
    assert "Spawned child" not in result.stderr
    assert "Traceback" not in result.stderr


def test_import_error_stops_master_before_fork(run_manage, private_gearmand, tmp_path):
    commands = tmp_path / "brokenapp" / "management" / "commands"
    commands.mkdir(parents=True)
    for package in (tmp_path / "brokenapp", tmp_path / "brokenapp" / "management", commands):
        (package / "__init__.py").write_text("")
    (commands / "gearman_worker_broken.py").write_text("import json\nimport no_such_module_here\n")

    result = run_manage(
        "gearman_pool", "--workers", "echo=1",
        env={
            "GEARMAN_TEST_SERVER": private_gearmand.address,
            "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}",
            "TEST_EXTRA_APPS": "brokenapp",
        },
    )

    assert result.returncode != 0
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in result.stderr
    assert f"{commands / 'gearman_worker_broken.py'}, line 2" in result.stderr
    assert "Spawned child" not in result.stderr


def test_sigterm_during_many_forks(spawn_manage, private_gearmand):
    pool = start_pool(spawn_manage, private_gearmand, "--workers", "echo=300")
    wait_until(lambda: "Spawned child" in pool.read_stderr(), message="the first fork")

    started = time.monotonic()
    pool.send_signal(signal.SIGTERM)
    exit_code = pool.wait(timeout=60)

    assert exit_code == 0
    assert time.monotonic() - started < 30
    log = pool.read_stderr()
    assert "Received SIGTERM: stopping gracefully" in log
    assert log.count("Spawned child") < 300
