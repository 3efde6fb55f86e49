"""Tests for the gearman_submit_job command, run in process and as a child process.

Tests with a worker command child process give it a private gearmand, so that no job left
queued by another test can reach it. Tests without a worker use the shared gearmand and a
task name of their own.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import sys
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.conftest import REPO_ROOT, manage_env
from tests.gearmand import pick_free_port
from tests.helpers import (
    EchoCommand,
    assert_one_line_error,
    queued_jobs,
    start_worker_command,
    unique_task,
    worker_thread,
)

JOB_TIMEOUT = 30.0
# Upper bound in seconds for a failing submit from start to exit, Django's start-up included.
FAILURE_EXIT_TIMEOUT = 10.0


def run_django(address: str, command: str, *args: str, input: bytes = b"", timeout: float = 60.0):
    """Run a management command with bytes for stdin, stdout and stderr.

    Unlike the run_manage fixture, --settings goes before the command's own arguments, so
    that `--` can end the options.
    """
    return subprocess.run(
        [sys.executable, "-m", "django", command, "--settings=tests.settings", *args],
        cwd=REPO_ROOT,
        env=manage_env(address, None),
        input=input,
        capture_output=True,
        timeout=timeout,
    )


@pytest.fixture
def echo_worker(private_gearmand, spawn_manage):
    """The address of a private gearmand with a gearman_worker_echo child process."""
    start_worker_command(spawn_manage, private_gearmand.address, "gearman_worker_echo", "echo")
    return private_gearmand.address


@pytest.fixture
def raw_worker(private_gearmand, spawn_manage):
    """The address of a private gearmand with a gearman_worker_raw child process."""
    start_worker_command(spawn_manage, private_gearmand.address, "gearman_worker_raw", "raw")
    return private_gearmand.address


def test_call_command_foreground():
    task = unique_task("command-foreground")
    stdout = io.StringIO()

    with worker_thread(EchoCommand(task)):
        call_command("gearman_submit_job", task, "hello", foreground=True, timeout=JOB_TIMEOUT, stdout=stdout)

    assert stdout.getvalue() == "hello\n"


def test_call_command_foreground_failure():
    task = unique_task("command-raise")

    with worker_thread(EchoCommand(task)), pytest.raises(CommandError, match="asked to raise"):
        call_command("gearman_submit_job", task, "raise", foreground=True, timeout=JOB_TIMEOUT)


@pytest.mark.parametrize("priority", ["high", "normal", "low"])
def test_background_prints_handle(run_manage, gearmand_address, priority):
    task = unique_task("command-background")

    completed = run_manage("gearman_submit_job", "--priority", priority, task, "payload")

    assert completed.returncode == 0, completed.stderr
    assert re.fullmatch(
        rf"Submitted job H:\S+ of task '{task}' to {re.escape(gearmand_address)}\n", completed.stdout
    ), completed.stdout
    assert queued_jobs(gearmand_address, task) == 1


@pytest.mark.parametrize("args", [("--", "-5"), ("-5",)], ids=["double-dash", "bare"])
def test_negative_number_is_data(echo_worker, args):
    completed = run_django(echo_worker, "gearman_submit_job", "--foreground", "echo", *args)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == b"-5"


def test_missing_task_name_prints_usage(run_manage):
    completed = run_manage("gearman_submit_job")

    assert completed.returncode != 0
    assert "usage:" in completed.stderr
    assert "task_name" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize(
    "text",
    ["Příliš žluťoučký kůň úpěl ďábelské ódy", "日本語のテキスト"],
    ids=["czech", "japanese"],
)
def test_unicode_round_trip(echo_worker, text):
    completed = run_django(echo_worker, "gearman_submit_job", "--foreground", "echo", text)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == text.encode("utf-8")


def test_stdin_binary_digest(raw_worker):
    payload = bytes(range(256)) + b"\x00\x00 \xff\xfe\xc5 not UTF-8 \x80" + "ž".encode()

    completed = run_django(raw_worker, "gearman_submit_job", "--foreground", "raw", "-", input=b"sha256:" + payload)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == hashlib.sha256(payload).hexdigest().encode("ascii")


def test_stdin_binary_round_trip(raw_worker):
    payload = b"\xff\xfe\x00binary\x00\x80\n\r\n" + bytes(range(255, -1, -1))

    completed = run_django(raw_worker, "gearman_submit_job", "--foreground", "raw", "-", input=payload)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == payload


def test_stdin_empty_is_none(raw_worker):
    completed = run_django(raw_worker, "gearman_submit_job", "--foreground", "raw", "-", input=b"")

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == b"<empty>"


def test_foreground_failure_exits_nonzero(run_manage, echo_worker):
    started = time.monotonic()

    completed = run_manage(
        "gearman_submit_job",
        "--foreground",
        "echo",
        "raise",
        env={"GEARMAN_TEST_SERVER": echo_worker},
        timeout=JOB_TIMEOUT,
    )

    assert time.monotonic() - started < FAILURE_EXIT_TIMEOUT
    assert completed.returncode != 0
    line = assert_one_line_error(completed.stderr)
    assert "asked to raise" in line
    assert completed.stdout == ""


def test_worker_survives_failed_job(echo_worker):
    failed = run_django(echo_worker, "gearman_submit_job", "--foreground", "echo", "raise")
    completed = run_django(echo_worker, "gearman_submit_job", "--foreground", "echo", "after")

    assert failed.returncode != 0
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == b"after"


@pytest.mark.parametrize("foreground", [False, True], ids=["background", "foreground"])
def test_unreachable_server(run_manage, foreground):
    address = f"127.0.0.1:{pick_free_port()}"
    args = ["--foreground"] if foreground else []
    started = time.monotonic()

    completed = run_manage("gearman_submit_job", "--server", address, *args, "echo", "data", timeout=JOB_TIMEOUT)

    assert time.monotonic() - started < FAILURE_EXIT_TIMEOUT
    assert completed.returncode != 0
    line = assert_one_line_error(completed.stderr)
    assert address in line


def test_timeout_without_worker(run_manage):
    task = unique_task("command-timeout")
    started = time.monotonic()

    completed = run_manage("gearman_submit_job", "--foreground", "--timeout", "1", task, "data", timeout=JOB_TIMEOUT)

    elapsed = time.monotonic() - started
    assert 1 <= elapsed < FAILURE_EXIT_TIMEOUT
    assert completed.returncode != 0
    line = assert_one_line_error(completed.stderr)
    assert task in line
    assert "1 s" in line


def test_timeout_requires_foreground():
    with pytest.raises(CommandError, match="--timeout applies only with --foreground"):
        call_command("gearman_submit_job", "echo", "data", "--timeout", "5", "--server", "127.0.0.1:1")


@pytest.mark.parametrize("timeout", ["0", "-1", "-0.5", "nan"])
def test_timeout_must_be_positive(timeout):
    with pytest.raises(CommandError, match="invalid --timeout"):
        call_command(
            "gearman_submit_job", "echo", "data", "--foreground", "--timeout", timeout, "--server", "127.0.0.1:1"
        )


def test_priority_bogus_rejected(run_manage):
    completed = run_manage("gearman_submit_job", "--priority", "bogus", "echo", "data")

    assert completed.returncode == 2
    assert "invalid choice: 'bogus'" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_priority_bogus_rejected_in_call_command():
    with pytest.raises(CommandError, match="invalid choice: 'bogus'"):
        call_command("gearman_submit_job", "echo", "data", "--priority", "bogus")


@pytest.mark.parametrize("task", ["a b", "tab\tname", ""])
def test_invalid_task_name(task):
    with pytest.raises(CommandError, match="invalid task name"):
        call_command("gearman_submit_job", task, "data", "--server", "127.0.0.1:1")


def test_invalid_server_option():
    with pytest.raises(CommandError, match="'127.0.0.1:port'"):
        call_command("gearman_submit_job", "echo", "data", "--server", "127.0.0.1:port")
