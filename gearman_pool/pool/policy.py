"""Restart policy: when to replace a dead child, per task.

A child that exits within ``boot_window`` seconds of its start, before it registered at a
job server, is a boot failure.
Consecutive boot failures of one task delay that task's next spawn exponentially, with
jitter, up to ``max_delay``. After ``max_boot_failures`` in a row the task is marked
failed and gets no more children, while other tasks keep serving. A child that
registered, served a job or outlived the boot window resets its task's count, so that
killing healthy children is never mistaken for a crash loop.
"""

from __future__ import annotations

import dataclasses
import random

DEFAULT_BOOT_WINDOW = 5.0
DEFAULT_INITIAL_DELAY = 0.5
DEFAULT_MAX_DELAY = 30.0
DEFAULT_MAX_BOOT_FAILURES = 10


@dataclasses.dataclass
class TaskRestartState:
    boot_failures: int = 0
    next_spawn_at: float = 0.0
    failed: bool = False


class RestartPolicy:
    def __init__(
        self,
        boot_window: float = DEFAULT_BOOT_WINDOW,
        initial_delay: float = DEFAULT_INITIAL_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        max_boot_failures: int = DEFAULT_MAX_BOOT_FAILURES,
        jitter=random.uniform,
    ):
        self.boot_window = boot_window
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.max_boot_failures = max_boot_failures
        self._jitter = jitter
        self._tasks: dict[str, TaskRestartState] = {}

    def state(self, task: str) -> TaskRestartState:
        return self._tasks.setdefault(task, TaskRestartState())

    def record_success(self, task: str) -> None:
        """Record that a child of ``task`` served a job: the task boots fine."""
        state = self.state(task)
        state.boot_failures = 0

    def record_exit(self, task: str, started_at: float, now: float, booted: bool = False) -> float:
        """Record a child's exit and return the delay before its replacement, in seconds.

        ``booted`` is True when the child registered at a job server or served a job. Returns 0.0
        for such a child and for one that ran past the boot window.
        """
        state = self.state(task)
        if booted or now - started_at >= self.boot_window:
            state.boot_failures = 0
            state.next_spawn_at = now
            return 0.0
        state.boot_failures += 1
        if state.boot_failures >= self.max_boot_failures:
            state.failed = True
        # Jitter before the cap, so that the delay never exceeds max_delay.
        delay = self.initial_delay * 2 ** (state.boot_failures - 1) * self._jitter(0.8, 1.2)
        delay = min(self.max_delay, delay)
        state.next_spawn_at = now + delay
        return delay

    def may_spawn(self, task: str, now: float) -> bool:
        state = self.state(task)
        return not state.failed and now >= state.next_spawn_at

    def next_spawn_time(self, task: str) -> float:
        return self.state(task).next_spawn_at

    def is_failed(self, task: str) -> bool:
        return self.state(task).failed
