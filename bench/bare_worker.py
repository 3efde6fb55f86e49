"""A bare worker loop: gearman_pool.worker.GearmanWorker serving one no-op task, without Django.

The baseline of the pool's drain rate and round trip. SIGTERM stops it after the job in
hand, as it stops a pool child.

Usage: python bench/bare_worker.py HOST:PORT TASK
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gearman_pool.address import ServerAddress  # noqa: E402
from gearman_pool.worker import GearmanWorker  # noqa: E402


def empty_result(job) -> bytes:
    return b""


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: bare_worker.py HOST:PORT TASK", file=sys.stderr)
        return 2
    address, task = argv
    worker = GearmanWorker([ServerAddress.parse(address)], {task.encode(): empty_result})
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.request_stop())
    try:
        worker.work()
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
