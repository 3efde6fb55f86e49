"""gearman_pool started with a pid file or log file that cannot be written: an error, no fork.

The disk-full cases mount an 8 KiB tmpfs and fill it, which needs root (CAP_SYS_ADMIN).
Where mounting fails, the pid file case points the pid file at /dev/full through a symlink
instead and records the pool's error message.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.faults.conftest import ScenarioReport
from tests.faults.support import SETTINGS, SETTINGS_LOGFILE, TASK, pool_child_pids, start_fault_pool
from tests.helpers import worker_count

pytestmark = pytest.mark.slow

# Seconds a pool that cannot start may take to exit: Django's start-up on a busy machine.
EXIT_TIMEOUT = 60.0
# Seconds to watch a pool that keeps running, before the test decides that it started.
RUNNING_GRACE = 8.0
TINY_TMPFS_SIZE = "8k"


@contextlib.contextmanager
def full_filesystem(mount_point: Path):
    """Mount a tiny tmpfs at ``mount_point`` and fill it; yield None when mounting fails."""
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TINY_TMPFS_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        yield None
        return
    try:
        # Unbuffered, so that no buffered bytes fail again when the file is closed.
        with open(mount_point / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"\0" * 1024)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def run_pool_expecting_exit(spawn_manage, server, *args, settings=SETTINGS, env=None):
    """Start the pool and return (exit code or None if it kept running, stderr, children seen).

    A pool that still runs after RUNNING_GRACE seconds is stopped with SIGKILL by the
    spawn_manage fixture after the test.
    """
    pool = start_fault_pool(spawn_manage, server, {TASK: 1}, *args, settings=settings, env=env)
    deadline = time.monotonic() + EXIT_TIMEOUT
    seen_children: set[int] = set()
    running_since = None
    while pool.poll() is None and time.monotonic() < deadline:
        seen_children |= pool_child_pids(pool)
        if worker_count(server.address, TASK) and running_since is None:
            running_since = time.monotonic()
        if running_since is not None and time.monotonic() - running_since > RUNNING_GRACE:
            break
        time.sleep(0.05)
    return pool.poll(), pool.read_stderr(), seen_children


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def report_case(
    fault_report, name: str, code, stderr: str, children: set[int], tmp_path: Path
) -> None:
    stderr = stderr.replace(str(tmp_path), "$TMP")
    if code is None:
        errors = stderr.count("--- Logging error ---")
        outcome = f"kept running; {errors} '--- Logging error ---' blocks on stderr"
    else:
        traceback = "traceback, " if "Traceback" in stderr else ""
        outcome = f"exit {code}, {traceback}{last_line(stderr)[:150]}"
    fault_report.add(ScenarioReport(f"8 {name}", children=f"{len(children)} forked", notes=outcome))


def test_pidfile_directory_missing(spawn_manage, private_gearmand, tmp_path, fault_report):
    pidfile = tmp_path / "missing" / "pool.pid"

    code, stderr, children = run_pool_expecting_exit(
        spawn_manage, private_gearmand, "--pidfile", str(pidfile)
    )
    report_case(fault_report, "pidfile dir missing", code, stderr, children, tmp_path)

    assert code == 1
    assert last_line(stderr).startswith(f"CommandError: cannot write pid file {pidfile}")
    assert "Traceback" not in stderr
    assert children == set()
    assert worker_count(private_gearmand.address, TASK) == 0


def test_pidfile_disk_full(spawn_manage, private_gearmand, tmp_path, fault_report):
    with full_filesystem(tmp_path / "full") as full:
        if full is None:
            pidfile = tmp_path / "pool.pid"
            os.symlink("/dev/full", pidfile)
            name = "pidfile -> /dev/full"
        else:
            pidfile = full / "pool.pid"
            name = "pidfile on full tmpfs"
        code, stderr, children = run_pool_expecting_exit(
            spawn_manage, private_gearmand, "--pidfile", str(pidfile)
        )
    report_case(fault_report, name, code, stderr, children, tmp_path)

    assert code == 1
    assert last_line(stderr).startswith("CommandError: ")
    assert str(pidfile) in last_line(stderr)
    if full is not None:
        assert last_line(stderr).endswith("the disk is full")
    assert "Traceback" not in stderr
    assert children == set()
    assert worker_count(private_gearmand.address, TASK) == 0


# Django configures LOGGING before it runs any command, so an unwritable log file ends the
# process in logging.config.dictConfig with Django's traceback, before gearman_pool runs.
@pytest.mark.parametrize(
    "name, log_path",
    [
        ("log file in /proc", "/proc/gearman_pool_faults.log"),
        ("log file is a directory", None),
    ],
)
def test_log_file_unwritable(
    spawn_manage, private_gearmand, tmp_path, fault_report, name, log_path
):
    log_path = log_path or str(tmp_path)

    code, stderr, children = run_pool_expecting_exit(
        spawn_manage, private_gearmand, settings=SETTINGS_LOGFILE, env={"FAULTS_LOG_FILE": log_path}
    )
    report_case(fault_report, name, code, stderr, children, tmp_path)

    assert code == 1
    assert log_path in stderr
    assert last_line(stderr) == "ValueError: Unable to configure handler 'file'"
    assert children == set()
    assert worker_count(private_gearmand.address, TASK) == 0


def test_log_file_unwritable_delayed_open(spawn_manage, private_gearmand, tmp_path, fault_report):
    # With delay=True the handler would open the file at the master's first record and
    # raise from that logger call; the pool opens it before anything else instead.
    log_path = "/proc/gearman_pool_faults.log"

    code, stderr, children = run_pool_expecting_exit(
        spawn_manage,
        private_gearmand,
        settings=SETTINGS_LOGFILE,
        env={"FAULTS_LOG_FILE": log_path, "FAULTS_LOG_DELAY": "1"},
    )
    report_case(fault_report, "log file in /proc, delay=True", code, stderr, children, tmp_path)

    assert code == 1
    assert last_line(stderr) == f"CommandError: cannot write log file {log_path}: No such file or directory"
    assert "Traceback" not in stderr
    assert children == set()
    assert worker_count(private_gearmand.address, TASK) == 0


def test_log_file_disk_full(spawn_manage, private_gearmand, tmp_path, fault_report):
    with full_filesystem(tmp_path / "full") as full:
        if full is None:
            pytest.skip("cannot mount a tmpfs here, so there is no full disk to write the log to")
        log_path = str(full / "pool.log")
        code, stderr, children = run_pool_expecting_exit(
            spawn_manage,
            private_gearmand,
            settings=SETTINGS_LOGFILE,
            env={"FAULTS_LOG_FILE": log_path},
        )
    report_case(fault_report, "log file on full tmpfs", code, stderr, children, tmp_path)

    assert code is not None, (
        f"the pool kept running; {stderr.count('--- Logging error ---')} logging errors"
    )
    assert code != 0
    assert last_line(stderr) == f"CommandError: cannot write log file {log_path}: the disk is full"
    assert children == set()
