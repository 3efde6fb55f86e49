#!/usr/bin/env python3
"""Run the test suite against a private gearmand.

Starts Debian's gearmand on 127.0.0.1 and a free port, exports its address as
GEARMAN_TEST_SERVER, runs `python -m pytest` with the given arguments, stops gearmand and exits
with pytest's exit code. Exit code 5 (no tests collected) becomes 1, so that a run that tests
nothing fails. Exit code 2 before pytest runs means that gearmand is missing or did not start.

Usage: python runtests.py [pytest arguments...]
Example: TEST_DB=postgresql python runtests.py -k pool -x
"""

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO_ROOT))

from tests.gearmand import GearmandError, GearmandProcess, find_gearmand  # noqa: E402

PYTEST_NO_TESTS_COLLECTED = 5
# Seconds that pytest gets to finish its teardown after Ctrl-C before it is killed.
INTERRUPT_GRACE_PERIOD = 30.0


def run_pytest(args: list[str], env: dict[str, str]) -> int:
    process = subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=REPO_ROOT, env=env)
    try:
        return process.wait()
    except KeyboardInterrupt:
        # The terminal sent SIGINT to pytest too, and pytest stops the run on its own.
        try:
            return process.wait(timeout=INTERRUPT_GRACE_PERIOD)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            process.kill()
            process.wait()
            raise


def main(argv: list[str]) -> int:
    try:
        find_gearmand()
    except GearmandError as error:
        print(f"runtests.py: {error}", file=sys.stderr)
        return 2

    server = GearmandProcess()
    try:
        server.start()
    except GearmandError as error:
        print(f"runtests.py: cannot start gearmand: {error}", file=sys.stderr)
        return 2

    try:
        print(f"runtests.py: gearmand (pid {server.pid}) listens on {server.address}", flush=True)
        env = dict(os.environ, GEARMAN_TEST_SERVER=server.address)
        exit_code = run_pytest(argv, env)
    finally:
        server.stop()

    if exit_code < 0:
        # pytest was killed by a signal: exit like a shell does, with 128 + signal number.
        return 128 - exit_code
    if exit_code == PYTEST_NO_TESTS_COLLECTED:
        print("runtests.py: pytest collected no tests; failing the run", file=sys.stderr)
        return 1
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
