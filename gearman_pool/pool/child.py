"""What a pool child runs after fork(): signal set-up, then the same worker loop as
``manage.py gearman_worker_<task>``. ``run_child`` never returns into the master's code.

The child reports to the master over a pipe, one ASCII line per event: "ready" once it
has registered at a job server, "job" after each job.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys

from django.core.management import load_command_class

from gearman_pool.errors import InvalidServerAddress
from gearman_pool.jobs import InvalidWorkerCommand, build_worker
from gearman_pool.pool.database import discard_inherited_connections

logger = logging.getLogger(__name__)

# Exit codes of a pool child, read by the master.
EXIT_OK = 0
EXIT_CRASHED = 1
EXIT_BOOT_ERROR = 3
EXIT_MASTER_GONE = 4

PR_SET_PDEATHSIG = 1

MESSAGE_READY = b"ready\n"
MESSAGE_JOB = b"job\n"


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


class MasterPipe:
    """The write end of the child's pipe to the master; never blocks the worker."""

    def __init__(self, fd: int):
        self.fd = fd
        os.set_blocking(fd, False)

    def send(self, message: bytes) -> None:
        try:
            os.write(self.fd, message)
        except (BlockingIOError, BrokenPipeError):
            # A full pipe means the master is behind; a broken one that it is gone. The
            # parent-pid check handles the second case, so the message can be dropped.
            pass


def run_child(entry, slot: int, master_pid: int, report_fd: int, master_fds, blocked_mask) -> None:
    """Serve ``entry``'s task in this forked child, then end the process with os._exit."""
    code = EXIT_CRASHED
    try:
        code = _serve(entry, slot, master_pid, report_fd, master_fds, blocked_mask)
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


def _serve(entry, slot, master_pid, report_fd, master_fds, blocked_mask) -> int:
    # The master's wake-up pipe, its pipes from other children and its handlers must
    # not act in the child.
    signal.set_wakeup_fd(-1)
    for fd in master_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    # Ctrl-C in a terminal and `pkill -HUP -g` reach the whole process group; only the
    # master decides what they mean, so children ignore them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked_mask)

    set_parent_death_signal(signal.SIGKILL)
    # The master may have died between fork() and prctl(); then no signal will come.
    if os.getppid() != master_pid:
        return EXIT_MASTER_GONE

    discard_inherited_connections()
    pipe = MasterPipe(report_fd)
    pid = os.getpid()
    try:
        command = load_command_class(entry.app_name, entry.command_name)
        worker = build_worker(
            [command],
            keep_running=lambda: os.getppid() == master_pid,
            client_id=f"{socket.gethostname()}:{pid}:{entry.task_name}#{slot}",
            on_registered=lambda address: pipe.send(MESSAGE_READY),
            on_job_finished=lambda job, ok: pipe.send(MESSAGE_JOB),
        )
    except (InvalidWorkerCommand, InvalidServerAddress) as exc:
        logger.error("Child for task %r cannot start (pid %s): %s", entry.task_name, pid, exc)
        return EXIT_BOOT_ERROR

    def request_stop(signum, frame):
        worker.request_stop()

    signal.signal(signal.SIGTERM, request_stop)
    try:
        command.prepare_worker()
    except Exception:
        logger.exception("prepare_worker() of task %r failed (pid %s)", entry.task_name, pid)
        return EXIT_BOOT_ERROR

    logger.debug("Child for task %r serving (pid %s, slot %d)", entry.task_name, pid, slot)
    worker.work()
    worker.close()
    if os.getppid() != master_pid:
        logger.warning("Child for task %r exiting: its master %s is gone (pid %s)", entry.task_name, master_pid, pid)
        return EXIT_MASTER_GONE
    logger.info("Child for task %r exiting after %d jobs (pid %s)", entry.task_name, worker.jobs_done, pid)
    return EXIT_OK
