"""The test run fails on a fork-with-threads warning and on the project's DeprecationWarnings.

Each test runs one probe of tests/warning_probes.py in a child pytest and checks its result.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.project_warnings import WARNING_LOG_ENV
from tests.warning_probes import REPO_ROOT, RUN_TIMEOUT, run_python

needs_fork_warning = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="Python warns about a fork with threads from 3.12 on"
)

# warn_explicit() attributes the warning to a module of the package, as a warning raised by
# the package's own code would be.
PROJECT_DEPRECATION = textwrap.dedent(
    """
    import warnings, django
    django.setup()
    warnings.warn_explicit("old API", DeprecationWarning, "worker.py", 1, module="gearman_pool.worker")
    """
)


def run_probe(name: str) -> subprocess.CompletedProcess:
    # The child run creates its own warning log, as a top-level run does.
    env = {key: value for key, value in os.environ.items() if key != WARNING_LOG_ENV}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"tests/warning_probes.py::{name}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


@needs_fork_warning
@pytest.mark.parametrize("name", ["test_probe_pytest_thread", "test_probe_child_thread"])
def test_fork_with_thread_fails_run(name):
    result = run_probe(name)
    output = result.stdout + result.stderr

    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert "1 passed" in output
    assert "fork with threads" in output
    assert "is multi-threaded, use of fork()" in output


@pytest.mark.parametrize("name", ["test_probe_pytest_alone", "test_probe_child_alone"])
def test_fork_without_thread_passes_run(name):
    result = run_probe(name)
    output = result.stdout + result.stderr

    assert result.returncode == pytest.ExitCode.OK, output
    assert "1 passed" in output
    assert "fork with threads" not in output


def test_project_deprecation_fails_started_process():
    result = run_python(PROJECT_DEPRECATION)

    assert result.returncode != 0
    assert "DeprecationWarning: old API" in result.stderr
