"""Polling helpers shared by the tests that run real gearmand and real processes."""

from __future__ import annotations

import time

from gearman_pool.address import ServerAddress
from gearman_pool.connection import AdminConnection


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, message: str = "condition"):
    """Call ``predicate`` until it returns a true value and return that value.

    Raises AssertionError naming ``message`` when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {message}")
        time.sleep(interval)


def gearmand_status(address: str) -> dict[str, tuple[int, int, int]]:
    """Return gearmand's `status` as {task: (total, running, workers)}."""
    status = {}
    with AdminConnection(ServerAddress.parse(address), io_timeout=5.0) as admin:
        admin.send_line(b"status")
        while (line := admin.read_line()) != b".":
            task, total, running, workers = line.decode("utf-8", "replace").split("\t")
            status[task] = (int(total), int(running), int(workers))
    return status


def worker_count(address: str, task: str) -> int:
    return gearmand_status(address).get(task, (0, 0, 0))[2]


def running_count(address: str, task: str) -> int:
    return gearmand_status(address).get(task, (0, 0, 0))[1]
