"""The pool master: forks the children, replaces dead ones and stops them on request.

Signal handlers only record the signal number; the wake-up fd set with
signal.set_wakeup_fd ends the main loop's wait, and the loop handles signals, reaps
children with waitpid(-1, WNOHANG) and restores the configured counts. The master
forks only from its main thread and has no other threads.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import time

from gearman_pool.connection import wait_readable
from gearman_pool.pool.child import EXIT_BOOT_ERROR, run_child
from gearman_pool.pool.policy import RestartPolicy

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ALL_TASKS_FAILED = 3

DEFAULT_GRACEFUL_TIMEOUT = 30.0
# The longest the main loop sleeps with nothing to do, in seconds.
IDLE_WAIT = 1.0

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD)


@dataclasses.dataclass
class ChildProcess:
    pid: int
    entry: object
    slot: int
    started_at: float
    term_sent: bool = False
    kill_sent: bool = False


def describe_exit_status(status: int) -> str:
    """Decode a waitpid() status: "exited with code 3" or "killed by SIGKILL"."""
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"killed by {name}"


class PoolMaster:
    def __init__(self, entries, *, graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT, policy=None):
        self.entries = list(entries)
        self.graceful_timeout = graceful_timeout
        self.policy = policy or RestartPolicy()
        self.children: dict[int, ChildProcess] = {}
        self.pid = os.getpid()
        self.stopping = False
        self.exit_code = EXIT_OK
        self._stop_deadline: float | None = None
        self._signals: list[int] = []
        self._wakeup_read = self._wakeup_write = -1
        self._previous_handlers = {}
        self._previous_wakeup_fd = -1

    # ---- lifecycle ---------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; return the exit code for the process."""
        self.pid = os.getpid()
        self.install_signal_handlers()
        try:
            logger.info(
                "Pool master started (pid %s): %s",
                self.pid,
                ", ".join(f"{entry.task_name}={entry.count}" for entry in self.entries),
            )
            while not (self.stopping and not self.children):
                self.step()
        finally:
            self.restore_signal_handlers()
        logger.info("Pool master stopped (pid %s)", self.pid)
        return self.exit_code

    def step(self, timeout: float | None = None) -> None:
        """Run one iteration of the main loop; tests call it directly."""
        self.wait_for_event(self.next_wait_timeout() if timeout is None else timeout)
        self.handle_signals()
        self.reap_children()
        if self.stopping:
            self.kill_after_deadline()
        else:
            self.spawn_missing_children()
            self.stop_if_every_task_failed()

    # ---- signals ---------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        self._wakeup_read, self._wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_read, False)
        os.set_blocking(self._wakeup_write, False)
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._wakeup_write, warn_on_full_buffer=False)
        for signum in HANDLED_SIGNALS:
            self._previous_handlers[signum] = signal.signal(signum, self._record_signal)

    def restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        for fd in (self._wakeup_read, self._wakeup_write):
            if fd >= 0:
                os.close(fd)
        self._wakeup_read = self._wakeup_write = -1

    def _record_signal(self, signum, frame) -> None:
        # Runs between bytecodes of the main loop: record only. No logging, forking,
        # killing or reaping here; the loop does all of that.
        self._signals.append(signum)

    def handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGCHLD:
                continue
            name = signal.Signals(signum).name
            if signum in STOP_SIGNALS and not self.stopping:
                logger.info("Received %s: stopping gracefully (pid %s)", name, self.pid)
                self.begin_graceful_stop()
            elif signum in STOP_SIGNALS or signum == signal.SIGQUIT:
                logger.info("Received %s: stopping now (pid %s)", name, self.pid)
                self.stop_now()
            elif signum == signal.SIGHUP:
                # NOTE: children are forked from this master's already-imported code, so
                # replacing them would not load new code; HUP is ignored until the pool
                # can re-exec itself.
                logger.warning("Received SIGHUP: code reload is not supported yet; restart the pool (pid %s)", self.pid)

    def wait_for_event(self, timeout: float) -> None:
        if wait_readable([self._wakeup_read], timeout):
            try:
                while os.read(self._wakeup_read, 4096):
                    pass
            except BlockingIOError:
                pass

    def next_wait_timeout(self) -> float:
        now = time.monotonic()
        if self.stopping:
            if self._stop_deadline is None:
                return IDLE_WAIT
            return max(0.0, min(IDLE_WAIT, self._stop_deadline - now))
        timeout = IDLE_WAIT
        for entry in self.entries:
            if self.count_children(entry) < entry.count and not self.policy.is_failed(entry.task_name):
                timeout = min(timeout, max(0.0, self.policy.next_spawn_time(entry.task_name) - now))
        return timeout

    # ---- children ----------------------------------------------------------------

    def count_children(self, entry) -> int:
        return sum(1 for child in self.children.values() if child.entry is entry)

    def spawn_missing_children(self) -> None:
        now = time.monotonic()
        for entry in self.entries:
            if not self.policy.may_spawn(entry.task_name, now):
                continue
            used_slots = {child.slot for child in self.children.values() if child.entry is entry}
            for slot in range(1, entry.count + 1):
                if slot not in used_slots:
                    self.spawn_child(entry, slot)

    def spawn_child(self, entry, slot: int) -> ChildProcess | None:
        # A child must never share a database socket with the master: close every
        # connection right before each fork, including respawns long after start.
        from django.db import connections

        connections.close_all()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()

        # Block the handled signals across fork() so that the child cannot run the
        # master's handlers before it installs its own.
        blocked_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked_mask)
            logger.error("Cannot fork a child for task %r: %s (pid %s)", entry.task_name, exc, self.pid)
            self.policy.record_exit(entry.task_name, time.monotonic(), time.monotonic())
            return None
        if pid == 0:
            run_child(entry, slot, self.pid, (self._wakeup_read, self._wakeup_write), blocked_mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked_mask)

        child = ChildProcess(pid, entry, slot, time.monotonic())
        self.children[pid] = child
        logger.info("Spawned child %s for task %r (slot %d of %d)", pid, entry.task_name, slot, entry.count)
        return child

    def reap_children(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                logger.debug("Reaped unknown process %s (%s)", pid, describe_exit_status(status))
                continue
            self.handle_child_exit(child, status)

    def handle_child_exit(self, child: ChildProcess, status: int) -> None:
        task = child.entry.task_name
        description = describe_exit_status(status)
        if self.stopping:
            logger.info("Child %s of task %r %s", child.pid, task, description)
            return

        clean = os.waitstatus_to_exitcode(status) == 0
        level = logging.INFO if clean else logging.WARNING
        now = time.monotonic()
        delay = self.policy.record_exit(task, child.started_at, now)
        if os.waitstatus_to_exitcode(status) == EXIT_BOOT_ERROR:
            level = logging.ERROR
        if self.policy.is_failed(task):
            logger.error(
                "Child %s of task %r %s; task %r failed %d times in a row at start, no more children",
                child.pid,
                task,
                description,
                task,
                self.policy.state(task).boot_failures,
            )
        elif delay > 0:
            logger.log(level, "Child %s of task %r %s; restarting in %.1f s", child.pid, task, description, delay)
        else:
            logger.log(level, "Child %s of task %r %s; restarting", child.pid, task, description)

    def stop_if_every_task_failed(self) -> None:
        if self.entries and all(self.policy.is_failed(entry.task_name) for entry in self.entries):
            if not self.children:
                logger.error("Every task failed at start; pool master exits (pid %s)", self.pid)
                self.exit_code = EXIT_ALL_TASKS_FAILED
                self.stopping = True

    # ---- stopping ----------------------------------------------------------------

    def begin_graceful_stop(self) -> None:
        self.stopping = True
        self._stop_deadline = time.monotonic() + self.graceful_timeout
        if self.children:
            logger.info(
                "Waiting up to %g s for %d children to finish their jobs (pid %s)",
                self.graceful_timeout,
                len(self.children),
                self.pid,
            )
        for child in self.children.values():
            self.signal_child(child, signal.SIGTERM)

    def stop_now(self) -> None:
        self.stopping = True
        self._stop_deadline = time.monotonic()
        self.kill_after_deadline()

    def kill_after_deadline(self) -> None:
        if self._stop_deadline is None or time.monotonic() < self._stop_deadline:
            return
        remaining = [child for child in self.children.values() if not child.kill_sent]
        if remaining:
            logger.warning("Killing %d children still running (pid %s)", len(remaining), self.pid)
        for child in remaining:
            self.signal_child(child, signal.SIGKILL)
            child.kill_sent = True

    def signal_child(self, child: ChildProcess, signum: int) -> None:
        if signum == signal.SIGTERM:
            # Each child gets one SIGTERM, however many stop requests arrive.
            if child.term_sent:
                return
            child.term_sent = True
        try:
            os.kill(child.pid, signum)
        except ProcessLookupError:
            pass
