"""Unit tests of the gearman_pool management command's option checks and --check."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from gearman_pool.management.commands import gearman_pool as command_module
from gearman_pool.pool import master as master_module


@pytest.fixture(autouse=True)
def no_fork(monkeypatch):
    """Fail the test if the command builds a PoolMaster or forks."""

    def fail_test(*arguments, **options):
        raise AssertionError("the command must not start a pool master")

    monkeypatch.setattr(command_module, "PoolMaster", fail_test)
    monkeypatch.setattr(master_module.os, "fork", fail_test)


def run_pool(*arguments: str) -> str:
    output = StringIO()
    call_command("gearman_pool", *arguments, stdout=output)
    return output.getvalue()


def test_check_prints_configuration():
    output = run_pool("--check", "--workers", "echo=2")

    assert output == "gearman_pool configuration is valid: echo=2 (no limits)\n"


def test_check_command_names():
    output = run_pool("--check", "--workers", "gearman_worker_echo=1, sleep=3")

    assert output == "gearman_pool configuration is valid: echo=1 (no limits), sleep=3 (no limits)\n"


@pytest.mark.parametrize(
    ("workers", "expected"),
    [
        ("echo", "entry 'echo' has no count; expected NAME=COUNT"),
        ("echo=2,", "--workers 'echo=2,' contains an empty entry"),
        ("", "--workers is empty"),
        ("nope=1", "unknown worker 'nope'"),
        ("echo=two", "count 'two' for 'echo' is not an integer"),
        ("echo=0", "count 0 for 'echo' is below 1"),
    ],
)
def test_bad_workers(workers, expected):
    with pytest.raises(CommandError) as raised:
        run_pool("--check", "--workers", workers)

    assert expected in str(raised.value)


def test_bad_workers_lists_valid_names():
    with pytest.raises(CommandError) as raised:
        run_pool("--check", "--workers", "nope=1")

    assert "Valid names: " in str(raised.value)
    assert "echo (gearman_worker_echo)" in str(raised.value)


@pytest.mark.parametrize("value", ["-1", "-0.5", "nan"])
def test_bad_graceful_timeout(value):
    with pytest.raises(CommandError) as raised:
        run_pool("--check", "--workers", "echo=1", f"--graceful-timeout={value}")

    assert f"invalid --graceful-timeout {float(value)!r}" in str(raised.value)


def test_zero_graceful_timeout():
    output = run_pool("--check", "--workers", "echo=1", "--graceful-timeout=0")

    assert "configuration is valid" in output


@pytest.mark.parametrize("value", ["0", "-3"])
def test_bad_max_restart_delay(value):
    with pytest.raises(CommandError) as raised:
        run_pool("--check", "--workers", "echo=1", f"--max-restart-delay={value}")

    assert f"invalid --max-restart-delay {float(value)!r}" in str(raised.value)


def test_bad_max_boot_failures():
    with pytest.raises(CommandError) as raised:
        run_pool("--check", "--workers", "echo=1", "--max-boot-failures=0")

    assert "invalid --max-boot-failures 0" in str(raised.value)


def test_no_workers_anywhere():
    # tests/settings.py does not set GEARMAN_POOL_WORKERS.
    with pytest.raises(CommandError) as raised:
        run_pool("--check")

    message = str(raised.value)
    assert "no workers to run" in message
    assert "GEARMAN_POOL_WORKERS" in message
    assert "Valid names: " in message
    assert "echo (gearman_worker_echo)" in message


@override_settings(GEARMAN_POOL_WORKERS={})
def test_empty_workers_setting():
    with pytest.raises(CommandError, match="no workers to run"):
        run_pool("--check")


@override_settings(GEARMAN_POOL_WORKERS={"echo": 2, "gearman_worker_sleep": 1})
def test_workers_from_settings():
    output = run_pool("--check")

    assert output == "gearman_pool configuration is valid: echo=2 (no limits), sleep=1 (no limits)\n"


@override_settings(GEARMAN_POOL_WORKERS={"echo": 0})
def test_bad_workers_setting():
    with pytest.raises(CommandError) as raised:
        run_pool("--check")

    assert "count 0 for 'echo' is below 1" in str(raised.value)


@override_settings(GEARMAN_POOL_WORKERS={"echo": 2})
def test_option_overrides_setting():
    output = run_pool("--check", "--workers", "sleep=1")

    assert output == "gearman_pool configuration is valid: sleep=1 (no limits)\n"


def test_check_shows_limits(settings):
    settings.GEARMAN_POOL_LIMITS = {"sleep": {"max_jobs": 50, "job_timeout": 9}}

    output = run_pool("--check", "--workers", "echo=1,sleep=1", "--max-memory", "64M", "--max-jobs", "100")

    assert output == (
        "gearman_pool configuration is valid: echo=1 (max_jobs=100, max_memory=64.0 MiB), "
        "sleep=1 (max_jobs=50, max_memory=64.0 MiB, job_timeout=9s)\n"
    )


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--max-jobs", "0", "invalid max_jobs 0"),
        ("--max-memory", "lots", "invalid memory limit 'lots'"),
        ("--max-memory", "0", "invalid memory limit '0'"),
        ("--job-timeout", "-3", "invalid job_timeout -3.0"),
    ],
)
def test_bad_limit_option(option, value, expected):
    with pytest.raises(CommandError, match=re.escape(expected)):
        run_pool("--check", "--workers", "echo=1", option, value)


def test_check_leaves_signal_mask_unchanged():
    import signal

    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])

    run_pool("--check", "--workers", "echo=1")
    with pytest.raises(CommandError):
        run_pool("--check", "--workers", "nosuch=1")

    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
