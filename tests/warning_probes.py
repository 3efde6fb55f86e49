"""Probes that tests/test_project_warnings.py runs in a child pytest, one at a time.

The file name does not match pytest's test file pattern, so a normal run does not collect
it. pytest still collects a path given on the command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 120.0

# Runs in a child process with the test settings, as a pool that a test starts does.
FORK_IN_CHILD = textwrap.dedent(
    """
    import os, sys, threading, django
    django.setup()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    if sys.argv[1] == "thread":
        thread.start()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    stop.set()
    if thread.is_alive():
        thread.join()
    """
)


def fork(with_thread: bool) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    if with_thread:
        thread.start()
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()


def run_python(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO_ROOT,
        env=dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings"),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def test_probe_pytest_thread():
    fork(with_thread=True)


def test_probe_pytest_alone():
    fork(with_thread=False)


def test_probe_child_thread():
    result = run_python(FORK_IN_CHILD, "thread")
    assert result.returncode == 0, result.stderr


def test_probe_child_alone():
    result = run_python(FORK_IN_CHILD, "alone")
    assert result.returncode == 0, result.stderr
