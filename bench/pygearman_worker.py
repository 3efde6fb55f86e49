"""A pygearman 0.2.6 worker serving one no-op task: the third-party drain-rate baseline.

pygearman's worker needs the task name as bytes (a str name fails on the first job) and a
poll_timeout, because after_poll() is the only place where it can stop. SIGTERM sets the
stop flag, so the worker exits within POLL_TIMEOUT seconds.

Usage: python bench/pygearman_worker.py HOST:PORT TASK
"""

from __future__ import annotations

import signal
import sys

import gearman

# Seconds between after_poll() calls of an idle worker.
POLL_TIMEOUT = 1.0


class StoppableWorker(gearman.GearmanWorker):
    stop_requested = False

    def after_poll(self, any_activity):
        return not self.stop_requested


def empty_result(worker, job) -> bytes:
    return b""


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: pygearman_worker.py HOST:PORT TASK", file=sys.stderr)
        return 2
    address, task = argv
    worker = StoppableWorker([address])
    worker.register_task(task.encode(), empty_result)

    def request_stop(signum, frame):
        worker.stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    try:
        worker.work(poll_timeout=POLL_TIMEOUT)
    finally:
        worker.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
