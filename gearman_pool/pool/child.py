"""The code a pool child runs after fork(): signal set-up, then the same worker loop as
``manage.py gearman_worker_<task>``. ``run_child`` never returns into the master's code.

The child reports to the master over a pipe, one ASCII line per event:

- ``ready``: registered at a job server;
- ``recycle <reason>``: the child is about to exit because it reached a limit.

Job starts and ends go to the child's scoreboard slot instead (scoreboard.py), because a
pipe message per job would wake the master thousands of times a second under load.
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import signal
import socket
import sys
import time

from django.core.management import load_command_class

from gearman_pool.errors import InvalidServerAddress
from gearman_pool.jobs import InvalidWorkerCommand, build_worker
from gearman_pool.logs import reopen_log_files
from gearman_pool.pool.database import discard_inherited_connections
from gearman_pool.pool.limits import MAX_JOBS_JITTER, format_bytes
from gearman_pool.pool.proctitle import set_process_title

logger = logging.getLogger(__name__)

# Exit codes of a pool child, read by the master.
EXIT_OK = 0
EXIT_CRASHED = 1
EXIT_BOOT_ERROR = 3
EXIT_MASTER_GONE = 4

PR_SET_PDEATHSIG = 1

MESSAGE_READY = b"ready"
MESSAGE_RECYCLE = b"recycle"


def set_parent_death_signal(signum: int) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent thread dies.

    Returns False where prctl is unavailable; the worker loop's parent-pid check still
    stops the child then, within a tick.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def unique_memory() -> int | None:
    """Return this process's unique set size (USS) in bytes, or None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_full_info().uss


class MasterPipe:
    """The write end of the child's pipe to the master.

    Writes are non-blocking, so a stalled master cannot stall the worker. A message that
    does not fit is dropped. The pipe buffer is 64 KiB, room for thousands of messages.
    """

    def __init__(self, fd: int):
        self.fd = fd
        os.set_blocking(fd, False)

    def send(self, kind: bytes, argument: bytes = b"") -> None:
        line = kind + (b" " + argument if argument else b"") + b"\n"
        try:
            os.write(self.fd, line)
        except (BlockingIOError, BrokenPipeError):
            pass


def run_child(
    entry, slot: int, master_pid: int, report_fd: int, scoreboard, master_fds, sibling_slots, blocked_mask
) -> None:
    """Serve ``entry``'s task in this forked child, then end the process with os._exit.

    ``master_fds`` and ``sibling_slots`` (the scoreboard slots of the other children) are
    what the child inherited from the master and closes first.
    """
    code = EXIT_CRASHED
    try:
        runner = ChildProcessRunner(entry, slot, master_pid, report_fd, scoreboard)
        code = runner.run(master_fds, sibling_slots, blocked_mask)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else EXIT_CRASHED
    except BaseException:
        logger.exception("Child for task %r crashed (pid %s, slot %d)", entry.task_name, os.getpid(), slot)
        code = EXIT_CRASHED
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


class ChildProcessRunner:
    def __init__(self, entry, slot: int, master_pid: int, report_fd: int, scoreboard):
        self.entry = entry
        self.task = entry.task_name
        self.slot = slot
        self.master_pid = master_pid
        self.pipe = MasterPipe(report_fd)
        self.scoreboard = scoreboard
        self.worker = None
        self.memory_limit = entry.limits.max_memory
        self.recycle_reason: str | None = None
        self.reopen_logs_requested = False

    def run(self, master_fds, sibling_slots, blocked_mask) -> int:
        self.reset_signals(master_fds, sibling_slots, blocked_mask)
        set_parent_death_signal(signal.SIGKILL)
        # The master may have died between fork() and prctl(); then no signal will come.
        if os.getppid() != self.master_pid:
            return EXIT_MASTER_GONE

        discard_inherited_connections()
        pid = os.getpid()
        self.set_title("starting")
        try:
            command = load_command_class(self.entry.app_name, self.entry.command_name)
            self.worker = build_worker(
                [command],
                keep_running=self.keep_running,
                client_id=f"{socket.gethostname()}:{pid}:{self.task}#{self.slot}",
                on_registered=lambda address: self.pipe.send(MESSAGE_READY),
                on_job_started=self.job_started,
                on_job_finished=self.job_finished,
            )
        except (InvalidWorkerCommand, InvalidServerAddress) as exc:
            logger.error("Child for task %r cannot start (pid %s): %s", self.task, pid, exc)
            return EXIT_BOOT_ERROR

        signal.signal(signal.SIGTERM, self.handle_sigterm)
        signal.signal(signal.SIGUSR1, self.handle_sigusr1)
        try:
            command.prepare_worker()
        except Exception:
            logger.exception("prepare_worker() of task %r failed (pid %s)", self.task, pid)
            return EXIT_BOOT_ERROR
        self.check_memory_at_start()

        self.set_title("idle")
        logger.debug("Child for task %r serving (pid %s, slot %d)", self.task, pid, self.slot)
        self.worker.work(max_jobs=self.jittered_max_jobs())
        self.worker.close()

        if os.getppid() != self.master_pid:
            logger.warning("Child for task %r exiting: its master %s is gone (pid %s)", self.task, self.master_pid, pid)
            return EXIT_MASTER_GONE
        if self.recycle_reason is None and not self.worker.stop_requested:
            self.recycle_reason = f"max_jobs {self.entry.limits.max_jobs} reached after {self.worker.jobs_done} jobs"
        if self.recycle_reason is not None:
            self.pipe.send(MESSAGE_RECYCLE, self.recycle_reason.encode())
            logger.info("Child for task %r recycled: %s (pid %s)", self.task, self.recycle_reason, pid)
        else:
            logger.info("Child for task %r exiting; jobs done: %d (pid %s)", self.task, self.worker.jobs_done, pid)
        return EXIT_OK

    def reset_signals(self, master_fds, sibling_slots, blocked_mask) -> None:
        # The master's wake-up pipe, its pipes from other children, the other children's
        # scoreboard slots and its handlers must not act in the child.
        signal.set_wakeup_fd(-1)
        self.scoreboard.close_descriptor()
        for sibling in sibling_slots:
            try:
                sibling.close()
            except OSError:
                pass
        for fd in master_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        # Ctrl-C in a terminal and `pkill -HUP -g` reach the whole process group; only the
        # master decides what they mean, so children ignore them.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGCHLD, signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked_mask)

    def handle_sigterm(self, signum, frame) -> None:
        # Records the request only; the job in hand finishes first.
        self.worker.request_stop()

    def handle_sigusr1(self, signum, frame) -> None:
        # Records the request only; keep_running() reopens the files in the loop.
        self.reopen_logs_requested = True
        self.worker.wake()

    def keep_running(self) -> bool:
        if self.reopen_logs_requested:
            self.reopen_logs_requested = False
            reopen_log_files()
        return os.getppid() == self.master_pid

    def jittered_max_jobs(self) -> int | None:
        max_jobs = self.entry.limits.max_jobs
        if max_jobs is None:
            return None
        # random is reseeded after fork() by CPython, so siblings draw different values.
        return max_jobs + random.randint(0, int(max_jobs * MAX_JOBS_JITTER))

    def check_memory_at_start(self) -> None:
        if self.memory_limit is None:
            return
        usage = unique_memory()
        if usage is None:
            logger.warning("max_memory of task %r needs psutil; the limit is ignored (pid %s)", self.task, os.getpid())
            self.memory_limit = None
        elif usage >= self.memory_limit:
            # Recycling would start a replacement that is over the limit before its first
            # job, so the pool would loop. Serve without the limit instead, and log it.
            logger.warning(
                "Child for task %r starts at %s, above max_memory %s; not recycling it for memory (pid %s)",
                self.task,
                format_bytes(usage),
                format_bytes(self.memory_limit),
                os.getpid(),
            )
            self.memory_limit = None

    def job_started(self, job) -> None:
        self.scoreboard.job_started(job.handle, time.monotonic())
        self.set_title("busy")

    def job_finished(self, job, ok: bool) -> None:
        self.scoreboard.job_finished(self.worker.jobs_done)
        self.set_title("idle")
        if self.memory_limit is None:
            return
        # Checked between jobs only, never during one.
        usage = unique_memory()
        if usage is not None and usage > self.memory_limit:
            self.recycle_reason = f"memory {format_bytes(usage)} above max_memory {format_bytes(self.memory_limit)}"
            self.worker.request_stop()

    def set_title(self, state: str) -> None:
        name = f"gp-{self.task}" if state == "starting" else None
        set_process_title(f"{self.task} #{self.slot} {state}", name)
