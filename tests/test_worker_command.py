"""Tests for worker commands (GearmanWorkerBaseCommand) run as child processes.

Each test starts a private gearmand, so the queues it checks hold only its own jobs.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pytest

import gearman_pool
from gearman_pool.address import ServerAddress
from gearman_pool.errors import JobFailed
from tests.helpers import (
    WORKER_START_TIMEOUT,
    assert_one_line_error,
    gearmand_status,
    running_count,
    start_worker_command,
    wait_until,
    worker_count,
)
from tests.testapp.models import JobRecord

JOB_TIMEOUT = 30.0
# Seconds an idle worker may take from SIGTERM to its exit.
IDLE_STOP_TIMEOUT = 2.0
# Seconds a worker may take to exit once its last job is done.
EXIT_TIMEOUT = 10.0
TRACEBACK_HEADER = "Traceback (most recent call last)"
# Seconds between repeated signals to a worker that has not exited yet.
SIGNAL_INTERVAL = 2.0


@pytest.fixture
def address(private_gearmand):
    return private_gearmand.address


def submit(address: str, task: str, data, **options):
    return gearman_pool.submit_job(task, data, servers=[ServerAddress.parse(address)], **options)


def run_foreground(address: str, task: str, data) -> bytes:
    return submit(address, task, data, background=False, timeout=JOB_TIMEOUT).result


def test_echo_worker_serves_jobs(spawn_manage, address):
    start_worker_command(spawn_manage, address, "gearman_worker_echo", "echo")

    results = [run_foreground(address, "echo", f"job {number}") for number in range(3)]

    assert results == [b"job 0", b"job 1", b"job 2"]


def test_failed_job_then_good_job(spawn_manage, address):
    process = start_worker_command(spawn_manage, address, "gearman_worker_echo", "echo")

    with pytest.raises(JobFailed) as excinfo:
        run_foreground(address, "echo", "raise")
    result = run_foreground(address, "echo", "good")

    assert excinfo.value.message == "ValueError: asked to raise"
    assert result == b"good"

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=EXIT_TIMEOUT) == 0
    stderr = process.read_stderr()
    assert stderr.count(TRACEBACK_HEADER) == 1, stderr
    assert "ValueError: asked to raise" in stderr
    assert "stopped; jobs done: 2" in stderr


def test_sigterm_while_idle(spawn_manage, address):
    process = start_worker_command(spawn_manage, address, "gearman_worker_echo", "echo")

    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    returncode = process.wait(timeout=EXIT_TIMEOUT)
    elapsed = time.monotonic() - started

    assert returncode == 0, process.read_stderr()
    assert elapsed < IDLE_STOP_TIMEOUT
    stderr = process.read_stderr()
    assert "Worker for task 'echo' started" in stderr
    assert "Worker for task 'echo' stopped; jobs done: 0" in stderr
    assert TRACEBACK_HEADER not in stderr


def test_sigterm_during_job_finishes_it(spawn_manage, address):
    process = start_worker_command(spawn_manage, address, "gearman_worker_sleep", "sleep")
    outcome = {}

    def client():
        try:
            outcome["result"] = run_foreground(address, "sleep", "3")
        except Exception as exc:
            outcome["error"] = exc

    client_thread = threading.Thread(target=client, daemon=True)
    client_thread.start()
    wait_until(lambda: running_count(address, "sleep") == 1, message="the sleep job to run")
    process.send_signal(signal.SIGTERM)
    client_thread.join(JOB_TIMEOUT)

    assert not client_thread.is_alive()
    assert outcome == {"result": str(process.pid).encode()}
    assert process.wait(timeout=EXIT_TIMEOUT) == 0, process.read_stderr()
    assert "stopped; jobs done: 1" in process.read_stderr()


def test_second_signal_abandons_job(spawn_manage, address):
    process = start_worker_command(spawn_manage, address, "gearman_worker_sleep", "sleep")
    submit(address, "sleep", "60")
    wait_until(lambda: running_count(address, "sleep") == 1, message="the sleep job to run")

    # The first SIGTERM only requests a stop. Signals are repeated until the process exits,
    # because two signals sent at once can reach the handler as one. The wait between them
    # is long, because a signal that arrives after the command restored the default
    # handlers ends the process with -SIGTERM instead of 130.
    def exited_after_signal():
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=SIGNAL_INTERVAL)
        except subprocess.TimeoutExpired:
            return False
        return True

    wait_until(exited_after_signal, timeout=3 * SIGNAL_INTERVAL, message="the worker to exit")

    assert process.returncode == 130
    stderr = process.read_stderr()
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("CommandError: "), stderr
    assert "interrupted by a second signal" in last_line
    assert "gearmand requeues job H:" in last_line
    assert TRACEBACK_HEADER not in stderr
    # gearmand puts the abandoned job back in the queue for the next worker.
    wait_until(
        lambda: gearmand_status(address).get("sleep") == (1, 0, 0),
        message="gearmand to requeue the job",
    )


def test_exit_after_job(spawn_manage, address):
    process = start_worker_command(
        spawn_manage, address, "gearman_worker_echo", "echo", "--exit-after-job"
    )

    result = run_foreground(address, "echo", "only one")

    assert result == b"only one"
    assert process.wait(timeout=EXIT_TIMEOUT) == 0, process.read_stderr()
    assert "stopped; jobs done: 1" in process.read_stderr()


def test_exit_after_job_leaves_next_job_queued(spawn_manage, address):
    process = start_worker_command(
        spawn_manage, address, "gearman_worker_echo", "echo", "--exit-after-job"
    )
    submit(address, "echo", "first")
    submit(address, "echo", "second")

    assert process.wait(timeout=EXIT_TIMEOUT) == 0, process.read_stderr()
    assert gearmand_status(address)["echo"] == (1, 0, 0)


def test_legacy_worker(spawn_manage, address):
    start_worker_command(spawn_manage, address, "gearman_worker_legacy", "legacy")

    assert run_foreground(address, "legacy", "X") == b"legacy got X"


def test_raw_worker_receives_bytes(spawn_manage, address):
    start_worker_command(spawn_manage, address, "gearman_worker_raw", "raw")
    payload = b"\x00\xff\xfe not UTF-8"

    assert run_foreground(address, "raw", payload) == payload
    assert run_foreground(address, "raw", None) == b"<empty>"


@pytest.mark.django_db(transaction=True)
def test_record_worker_rows_visible(spawn_manage, address):
    process = start_worker_command(spawn_manage, address, "gearman_worker_record", "record")

    replies = [json.loads(run_foreground(address, "record", f"row {number}")) for number in range(2)]

    records = list(JobRecord.objects.all())
    assert [record.id for record in records] == [reply["id"] for reply in replies]
    assert [record.payload for record in records] == ["row 0", "row 1"]
    assert {record.task for record in records} == {"record"}
    assert {record.pid for record in records} == {process.pid}
    assert {reply["pid"] for reply in replies} == {process.pid}


@pytest.mark.django_db(transaction=True)
def test_record_worker_sees_test_rows(spawn_manage, address):
    existing = JobRecord.objects.create(task="written by the test", payload="", pid=0)
    start_worker_command(spawn_manage, address, "gearman_worker_record", "record")

    reply = json.loads(run_foreground(address, "record", "after"))

    # The worker's row follows the test's row in the same table of the same database.
    assert reply["id"] > existing.id
    assert JobRecord.objects.count() == 2


def test_invalid_servers_setting_fails_check(run_manage):
    started = time.monotonic()

    completed = run_manage("gearman_worker_echo", env={"GEARMAN_TEST_SERVER": "127.0.0.1:port"}, timeout=JOB_TIMEOUT)

    assert time.monotonic() - started < WORKER_START_TIMEOUT
    assert completed.returncode != 0
    assert "gearman_pool.E002" in completed.stderr
    assert "'127.0.0.1:port'" in completed.stderr
    assert TRACEBACK_HEADER not in completed.stderr


def test_invalid_servers_setting_without_checks(run_manage):
    completed = run_manage(
        "gearman_worker_echo",
        "--skip-checks",
        env={"GEARMAN_TEST_SERVER": "127.0.0.1:port"},
        timeout=JOB_TIMEOUT,
    )

    assert completed.returncode != 0
    line = assert_one_line_error(completed.stderr)
    assert "'127.0.0.1:port'" in line


def test_worker_unregisters_after_exit(spawn_manage, address):
    process = start_worker_command(spawn_manage, address, "gearman_worker_echo", "echo")

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=EXIT_TIMEOUT) == 0

    wait_until(lambda: worker_count(address, "echo") == 0, message="gearmand to drop the worker")
