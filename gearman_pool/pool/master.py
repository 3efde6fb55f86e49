"""The pool master: forks the children, replaces dead ones, reloads and stops them.

Signal handlers only record the signal number; the wake-up fd set with
signal.set_wakeup_fd ends the main loop's wait. Each loop step then handles the signals,
reads the children's reports, reaps children with waitpid(-1, WNOHANG), reads their job
states from the scoreboard and restores the configured counts. The master forks only from
its main thread and has no other threads.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import signal
import sys
import threading
import time

from gearman_pool.conf import gearman_settings
from gearman_pool.connection import wait_readable
from gearman_pool.logs import reopen_log_files
from gearman_pool.pool.child import EXIT_BOOT_ERROR, MESSAGE_READY, MESSAGE_RECYCLE, run_child
from gearman_pool.pool.control import ControlServer
from gearman_pool.pool.database import close_connections_before_fork
from gearman_pool.pool.gearmand import GEARMAND_PID_ENV
from gearman_pool.pool.policy import RestartPolicy
from gearman_pool.pool.proctitle import set_process_title
from gearman_pool.pool.reload import Validation, reexec_master, take_control_fd, take_inherited_children
from gearman_pool.pool.scoreboard import ScoreboardSlot
from gearman_pool.pool.status import build_status, scale_request
from gearman_pool.pool.systemd import notify

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ALL_TASKS_FAILED = 3

DEFAULT_GRACEFUL_TIMEOUT = 30.0
# Maximum time the main loop sleeps with nothing to do, in seconds.
IDLE_WAIT = 1.0
# Seconds past a job's deadline at which the master wakes to kill its child, so that the
# job is over its timeout by then and the wake-up is not repeated.
JOB_TIMEOUT_MARGIN = 0.01
# With a job_timeout set, the master reads the scoreboard at least this often, as a share
# of the shortest job_timeout, but not more often than every JOB_TIMEOUT_MIN_POLL seconds.
JOB_TIMEOUT_POLL_FRACTION = 0.25
JOB_TIMEOUT_MIN_POLL = 0.05
# Seconds between the last child's exit and stopping the pool's own gearmand.
GEARMAND_STOP_DELAY = 0.5

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
HANDLED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGCHLD,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
)

STARTING = "starting"
READY = "ready"
BUSY = "busy"
STOPPING = "stopping"

CURRENT = "current"
PREVIOUS = "previous"


@dataclasses.dataclass
class ChildProcess:
    pid: int
    task_name: str
    slot: int
    started_at: float
    report_fd: int = -1
    scoreboard: ScoreboardSlot | None = None
    generation: str = CURRENT
    ready: bool = False
    served_jobs: bool = False
    term_sent: bool = False
    term_sent_at: float | None = None
    kill_sent: bool = False
    report_buffer: bytes = b""
    job_handle: str | None = None
    job_started_at: float | None = None
    jobs_done: int = 0
    recycle_reason: str | None = None
    kill_reason: str | None = None

    @property
    def state(self) -> str:
        if self.term_sent or self.kill_sent:
            return STOPPING
        if self.job_handle is not None:
            return BUSY
        return READY if self.ready else STARTING


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


def adopt_scoreboard(fd) -> ScoreboardSlot | None:
    """Map the scoreboard slot that a previous master image handed over, or return None."""
    if not isinstance(fd, int) or fd < 0:
        return None
    try:
        os.set_inheritable(fd, False)
        return ScoreboardSlot(fd)
    except (OSError, ValueError) as exc:
        logger.warning("Cannot map an inherited scoreboard slot (fd %s): %s (pid %s)", fd, exc, os.getpid())
        return None


class PoolMaster:
    """Supervises children for each PoolEntry.

    ``exec_argv`` is the command line that re-runs this master (interpreter first); without
    it SIGHUP cannot reload code. ``pidfile`` is a Pidfile or None.
    """

    def __init__(
        self,
        entries,
        *,
        graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
        policy: RestartPolicy | None = None,
        exec_argv: list[str] | None = None,
        pidfile=None,
        control_socket: str | None = None,
        gearmand=None,
    ):
        self.entries = {entry.task_name: entry for entry in entries}
        self.counts = {entry.task_name: entry.count for entry in entries}
        self.control_socket = control_socket
        self.gearmand = gearmand
        self.control: ControlServer | None = None
        self.slot_restarts: dict[tuple[str, int], int] = {}
        self.started_at = time.time()
        self.notified_ready = False
        self.graceful_timeout = graceful_timeout
        self.policy = policy or RestartPolicy()
        self.exec_argv = exec_argv
        self.pidfile = pidfile
        self.children: dict[int, ChildProcess] = {}
        self.pid = os.getpid()
        self.stopping = False
        self.exit_code = EXIT_OK
        self.validation: Validation | None = None
        self.reload_requested = False
        self._last_validation_error: str | None = None
        self._children_gone_at: float | None = None
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
            if self.pidfile is not None:
                self.pidfile.create(self.pid)
            if self.control_socket is not None:
                self.control = ControlServer(self.control_socket, self.handle_control_request, take_control_fd())
            self.adopt_inherited_children()
            self.start_gearmand()
            set_process_title("master", "gp-master")
            logger.info(
                "Pool master %s (pid %s): tasks %s; servers %s",
                "re-executed with the new code" if self.reloading else "started",
                self.pid,
                ", ".join(f"{entry.task_name}={entry.count}" for entry in self.entries.values()),
                ", ".join(str(address) for address in gearman_settings.servers),
            )
            # Signals that arrived during start-up, or across a re-exec, were held
            # blocked until the handlers above existed.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
            while not (self.stopping and not self.children and self.validation is None and not self.gearmand_running):
                self.step()
        finally:
            # A successful reload never gets here: execv() replaced this image.
            self.restore_signal_handlers()
            if self.control is not None:
                self.control.close()
            if self.gearmand is not None:
                self.gearmand.cleanup()
            if self.pidfile is not None:
                self.pidfile.remove(self.pid)
        logger.info("Pool master stopped (pid %s)", self.pid)
        return self.exit_code

    def step(self, timeout: float | None = None) -> None:
        """Run one iteration of the main loop; tests call it directly."""
        self.wait_for_event(self.next_wait_timeout() if timeout is None else timeout)
        self.handle_signals()
        self.reap_children()
        self.refresh_job_states()
        if self.stopping:
            # A job over its job_timeout is killed during a stop too, rather than left
            # to run until the graceful timeout.
            self.kill_jobs_over_timeout()
            self.kill_after_deadline()
            self.stop_gearmand_last()
            return
        if self.gearmand is not None:
            self.gearmand.restart_if_due()
        self.kill_overdue_children()
        self.stop_surplus_children()
        self.spawn_missing_children()
        self.retire_replaced_children()
        self.notify_ready_once_served()
        self.stop_if_every_task_failed()

    # ---- signals and events -----------------------------------------------------

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
                self.request_reload()
            elif signum in (signal.SIGTTIN, signal.SIGTTOU) and not self.stopping:
                delta = 1 if signum == signal.SIGTTIN else -1
                for task in self.entries:
                    self.scale(task, max(1, self.counts[task] + delta))
            elif signum == signal.SIGUSR1:
                self.reopen_logs()

    def wait_for_event(self, timeout: float) -> None:
        reports = {child.report_fd: child for child in self.children.values() if child.report_fd >= 0}
        control_fds = []
        if self.control is not None:
            control_fds = [self.control.fileno(), *self.control.client_fds()]
        ready = wait_readable([self._wakeup_read, *reports, *control_fds], timeout)
        for fd in ready:
            if fd == self._wakeup_read:
                self._drain(fd)
            elif fd in reports:
                self.read_report(reports[fd])
            elif self.control is not None and fd == self.control.fileno():
                self.control.accept()
            elif self.control is not None:
                self.control.serve(fd)
        if self.control is not None:
            self.control.drop_stale_clients()

    def _drain(self, fd: int) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except BlockingIOError:
            pass

    def read_report(self, child: ChildProcess) -> None:
        try:
            data = os.read(child.report_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close_report_pipe(child)
            return
        lines = (child.report_buffer + data).split(b"\n")
        child.report_buffer = lines.pop()
        for line in lines:
            self.handle_report(child, line + b"\n")

    def handle_report(self, child: ChildProcess, message: bytes) -> None:
        kind, _, argument = message.rstrip(b"\n").partition(b" ")
        if kind == MESSAGE_READY and not child.ready:
            child.ready = True
            logger.debug("Child %s of task %r is ready", child.pid, child.task_name)
        elif kind == MESSAGE_RECYCLE:
            child.recycle_reason = argument.decode("utf-8", "replace")

    def close_report_pipe(self, child: ChildProcess) -> None:
        if child.report_fd >= 0:
            os.close(child.report_fd)
            child.report_fd = -1

    def refresh_job_states(self) -> None:
        """Copy each child's job state from its scoreboard slot."""
        for child in self.children.values():
            self.refresh_job_state(child)

    def refresh_job_state(self, child: ChildProcess) -> None:
        if child.scoreboard is None:
            return
        state = child.scoreboard.read()
        if state is None:
            # Every attempt overlapped a write by the child; the next step reads again.
            return
        child.job_handle = state.job_handle
        child.job_started_at = state.job_started_at
        child.jobs_done = state.jobs_done
        if not child.served_jobs and (state.jobs_done or state.job_started_at is not None):
            # A child that got as far as running a job booted fine.
            child.ready = True
            child.served_jobs = True
            self.policy.record_success(child.task_name)

    def next_wait_timeout(self) -> float:
        now = time.monotonic()
        if self.stopping:
            if self._children_gone_at is not None:
                return max(0.0, min(IDLE_WAIT, self._children_gone_at + GEARMAND_STOP_DELAY - now))
            if self._stop_deadline is None:
                return self.job_timeout_wait(now)
            return max(0.0, min(self._stop_deadline - now, self.job_timeout_wait(now)))
        timeout = IDLE_WAIT
        for entry in self.entries.values():
            if self.count_children(entry.task_name) < self.counts[entry.task_name] and not self.policy.is_failed(
                entry.task_name
            ):
                timeout = min(timeout, max(0.0, self.policy.next_spawn_time(entry.task_name) - now))
        return min(timeout, self.job_timeout_wait(now))

    def job_timeout_wait(self, now: float) -> float:
        """Return how long the master may sleep without missing a job's timeout.

        The master learns of a job start only when it reads the child's scoreboard slot at
        a step. So it steps at least every quarter of the shortest job_timeout, which finds
        any job before its deadline, and wakes at the deadline of each job it has seen,
        counted from the start that the child recorded.
        """
        timeout = IDLE_WAIT
        for entry in self.entries.values():
            if entry.limits.job_timeout is not None:
                timeout = min(timeout, max(JOB_TIMEOUT_MIN_POLL, entry.limits.job_timeout * JOB_TIMEOUT_POLL_FRACTION))
        for child in self.children.values():
            entry = self.entries.get(child.task_name)
            if entry is None or entry.limits.job_timeout is None or child.job_started_at is None or child.kill_sent:
                continue
            deadline = child.job_started_at + entry.limits.job_timeout + JOB_TIMEOUT_MARGIN
            timeout = min(timeout, max(0.0, deadline - now))
        return timeout

    # ---- children ----------------------------------------------------------------

    def current_children(self, task_name: str) -> list[ChildProcess]:
        return [
            child
            for child in self.children.values()
            if child.task_name == task_name and child.generation == CURRENT and not child.term_sent
        ]

    def count_children(self, task_name: str) -> int:
        return len(self.current_children(task_name))

    def spawn_missing_children(self) -> None:
        now = time.monotonic()
        for entry in self.entries.values():
            if not self.policy.may_spawn(entry.task_name, now):
                continue
            used_slots = {child.slot for child in self.current_children(entry.task_name)}
            for slot in range(1, self.counts[entry.task_name] + 1):
                if self._signals:
                    # A signal arrived: handle it in the next step before forking more,
                    # so that a stop request is never stuck behind a long series of forks.
                    return
                if slot not in used_slots:
                    self.spawn_child(entry, slot)

    def spawn_child(self, entry, slot: int) -> ChildProcess | None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("the pool master must fork from its main thread")
        # A child must never share a database socket with the master: close every
        # connection right before each fork, including respawns long after start.
        close_connections_before_fork()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        try:
            scoreboard = ScoreboardSlot.create()
        except OSError as exc:
            logger.error("Cannot create the scoreboard slot of a child for task %r: %s (pid %s)", entry.task_name, exc, self.pid)
            now = time.monotonic()
            self.policy.record_exit(entry.task_name, now, now)
            return None
        report_read, report_write = os.pipe()

        # Block the handled signals across fork() so that the child cannot run the
        # master's handlers before it installs its own.
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        # Frozen objects are out of reach of the child's garbage collector, which would
        # otherwise write to every object it scans and so copy the master's pages into
        # the child. The master unfreezes its own copy right after the fork.
        gc.freeze()
        try:
            pid = os.fork()
        except OSError as exc:
            gc.unfreeze()
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
            os.close(report_read)
            os.close(report_write)
            scoreboard.close()
            logger.error("Cannot fork a child for task %r: %s (pid %s)", entry.task_name, exc, self.pid)
            now = time.monotonic()
            self.policy.record_exit(entry.task_name, now, now)
            return None
        if pid == 0:
            master_fds = [self._wakeup_read, self._wakeup_write, report_read]
            master_fds += [other.report_fd for other in self.children.values() if other.report_fd >= 0]
            sibling_slots = [other.scoreboard for other in self.children.values() if other.scoreboard is not None]
            run_child(entry, slot, self.pid, report_write, scoreboard, master_fds, sibling_slots, previous_mask)
        gc.unfreeze()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        os.close(report_write)
        os.set_blocking(report_read, False)

        child = ChildProcess(pid, entry.task_name, slot, time.monotonic(), report_fd=report_read, scoreboard=scoreboard)
        self.children[pid] = child
        key = (entry.task_name, slot)
        if key in self.slot_restarts:
            self.slot_restarts[key] += 1
        else:
            self.slot_restarts[key] = 0
        logger.info(
            "Spawned child %s for task %r (slot %d of %d)", pid, entry.task_name, slot, self.counts[entry.task_name]
        )
        return child

    def reap_children(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.validation is not None and pid == self.validation.pid:
                self.finish_validation(status)
                continue
            if self.gearmand is not None and pid == self.gearmand.pid:
                self.gearmand.exited(describe_exit_status(status), self.stopping)
                continue
            child = self.children.pop(pid, None)
            if child is None:
                logger.debug("Reaped unknown process %s (%s)", pid, describe_exit_status(status))
                continue
            if child.report_fd >= 0:
                # Read what the child wrote before it exited, then close the pipe.
                self.read_report(child)
                self.close_report_pipe(child)
            if child.scoreboard is not None:
                # A job it ran since the last step still counts as a sign that it booted.
                self.refresh_job_state(child)
                child.scoreboard.close()
                child.scoreboard = None
            self.handle_child_exit(child, status)

    def handle_child_exit(self, child: ChildProcess, status: int) -> None:
        task = child.task_name
        description = describe_exit_status(status)
        if child.kill_reason is not None:
            description = f"{description} ({child.kill_reason})"
        if self.stopping or child.generation == PREVIOUS or task not in self.entries or child.term_sent:
            logger.info("Child %s of task %r %s", child.pid, task, description)
            return
        if child.recycle_reason is not None:
            logger.info("Child %s of task %r recycled (%s); replacing it", child.pid, task, child.recycle_reason)
            self.policy.record_exit(task, child.started_at, time.monotonic(), booted=True)
            return

        code = os.waitstatus_to_exitcode(status)
        level = logging.INFO if code == 0 else logging.WARNING
        if code == EXIT_BOOT_ERROR:
            level = logging.ERROR
        now = time.monotonic()
        delay = self.policy.record_exit(task, child.started_at, now, booted=child.ready or child.served_jobs)
        if self.policy.is_failed(task):
            logger.error(
                "Child %s of task %r %s; task %r failed %d times in a row at start, so it gets no more children",
                child.pid,
                task,
                description,
                task,
                self.policy.state(task).boot_failures,
            )
            old_pids = sorted(
                other.pid
                for other in self.children.values()
                if other.task_name == task and other.generation == PREVIOUS and not other.term_sent
            )
            if old_pids:
                logger.error(
                    "Reload incomplete: the new code of task %r fails at start; %d children of the previous "
                    "code keep serving (pids %s) but are not replaced when they exit; fix the code and send "
                    "SIGHUP again (pid %s)",
                    task,
                    len(old_pids),
                    ", ".join(map(str, old_pids)),
                    self.pid,
                )
        elif delay > 0:
            logger.log(level, "Child %s of task %r %s; restarting in %.1f s", child.pid, task, description, delay)
        else:
            logger.log(level, "Child %s of task %r %s; restarting", child.pid, task, description)

    def stop_if_every_task_failed(self) -> None:
        if not self.entries or not all(self.policy.is_failed(task) for task in self.entries):
            return
        if self.children:
            # Some children still serve (of the previous code, or of a failed task's
            # other slots); keep them rather than exit.
            return
        logger.error("Every task failed at start; pool master exits (pid %s)", self.pid)
        self.exit_code = EXIT_ALL_TASKS_FAILED
        self.begin_graceful_stop()

    # ---- reload --------------------------------------------------------------------

    def request_reload(self) -> None:
        if self.stopping:
            logger.info("Received SIGHUP while stopping; ignored (pid %s)", self.pid)
            return
        if self.exec_argv is None:
            logger.warning(
                "Received SIGHUP, but this master was not started from a command line and cannot "
                "re-execute itself; restart it to load new code (pid %s)",
                self.pid,
            )
            return
        if self.validation is not None or (self.reloading and not self.reload_stalled):
            if not self.reload_requested:
                logger.info("Received SIGHUP during a reload; one more reload follows it (pid %s)", self.pid)
            self.reload_requested = True
            return
        self.start_validation()

    @property
    def reloading(self) -> bool:
        return any(child.generation == PREVIOUS for child in self.children.values())

    @property
    def reload_stalled(self) -> bool:
        """True when a task's new children failed to start while its old ones still serve.

        Such a reload cannot finish by itself, so the next SIGHUP starts a new one at once.
        """
        return any(
            child.generation == PREVIOUS and self.policy.is_failed(child.task_name)
            for child in self.children.values()
        )

    def start_validation(self) -> None:
        self.reload_requested = False
        try:
            self.validation = Validation(self.exec_argv)
        except OSError as exc:
            logger.error("Reload failed: cannot start the validation of the new code: %s (pid %s)", exc, self.pid)
            return
        logger.info(
            "Reload requested: checking the new code in process %s before replacing children (pid %s)",
            self.validation.pid,
            self.pid,
        )

    def finish_validation(self, status: int) -> None:
        validation, self.validation = self.validation, None
        passed, output = validation.finish(status)
        if self.stopping:
            return
        if not passed:
            if output == self._last_validation_error:
                # A burst of SIGHUPs over the same broken code repeats the same error;
                # print its full text once.
                logger.error(
                    "Reload aborted: the new code failed its check again with the same error; "
                    "the current children keep serving (pid %s)",
                    self.pid,
                )
            else:
                logger.error(
                    "Reload aborted: the new code failed its check (%s); the current children keep serving. "
                    "Output:\n%s",
                    describe_exit_status(status),
                    output,
                )
            self._last_validation_error = output
            if self.reload_requested:
                self.start_validation()
            return
        logger.info("Reload: the new code passed its check; re-executing the master (pid %s)", self.pid)
        # Signals stay blocked across execv() and are delivered once the new image has
        # installed its handlers, so none is lost or acted on by a default handler.
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        signal.set_wakeup_fd(-1)
        notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        control_fd = self.control.detach_for_exec() if self.control is not None else None
        if self.gearmand is not None and self.gearmand.pid is not None:
            os.environ[GEARMAND_PID_ENV] = str(self.gearmand.pid)
        try:
            reexec_master(self.exec_argv, list(self.children.values()), self.reload_requested, control_fd)
        except OSError as exc:
            if self.control is not None:
                self.control.listener.set_inheritable(False)
            signal.set_wakeup_fd(self._wakeup_write, warn_on_full_buffer=False)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
            logger.error("Reload failed: cannot re-execute %s: %s (pid %s)", self.exec_argv[0], exc, self.pid)

    def adopt_inherited_children(self) -> None:
        inherited, reload_pending = take_inherited_children()
        for record in inherited:
            report_fd = record.get("fd", -1)
            if isinstance(report_fd, int) and report_fd >= 0:
                try:
                    os.set_inheritable(report_fd, False)
                    os.set_blocking(report_fd, False)
                except OSError:
                    report_fd = -1
            child = ChildProcess(
                pid=record["pid"],
                task_name=str(record.get("task", "")),
                slot=int(record.get("slot", 0)),
                started_at=float(record.get("started_at", time.monotonic())),
                report_fd=report_fd if isinstance(report_fd, int) else -1,
                scoreboard=adopt_scoreboard(record.get("scoreboard_fd")),
                generation=PREVIOUS,
                ready=bool(record.get("ready")),
            )
            self.children[child.pid] = child
        if inherited:
            logger.info(
                "Reload: adopted %d children of the previous code; they serve until new ones are ready (pid %s)",
                len(inherited),
                self.pid,
            )
        self.reload_requested = reload_pending

    def retire_replaced_children(self) -> None:
        """Stop children of the previous code once new children can take their place.

        A task keeps at least its configured count serving: a previous child is stopped
        only while the ready new children plus the remaining previous ones exceed that
        count. A task that is no longer configured loses its previous children at once.
        """
        previous = [child for child in self.children.values() if child.generation == PREVIOUS and not child.term_sent]
        if self.reload_requested and self.validation is None and (not self.reloading or self.reload_stalled):
            self.start_validation()
        if not previous:
            return
        for task_name in {child.task_name for child in previous}:
            old = sorted(
                (child for child in previous if child.task_name == task_name), key=lambda child: child.started_at
            )
            entry = self.entries.get(task_name)
            if entry is None:
                retire = len(old)
            else:
                ready_new = sum(1 for child in self.current_children(task_name) if child.ready)
                serving_old = len(old)
                retire = max(0, ready_new + serving_old - self.counts[task_name])
                if ready_new >= self.counts[task_name]:
                    retire = serving_old
            for child in old[:retire]:
                logger.info(
                    "Reload: stopping child %s of task %r, replaced by new code (pid %s)", child.pid, task_name, self.pid
                )
                self.signal_child(child, signal.SIGTERM)
        if not [child for child in self.children.values() if child.generation == PREVIOUS and not child.term_sent]:
            logger.info("Reload: every task is served by new children (pid %s)", self.pid)
            notify("READY=1", "STATUS=Reload complete")

    # ---- the local gearmand ----------------------------------------------------------

    @property
    def gearmand_running(self) -> bool:
        return self.gearmand is not None and self.gearmand.pid is not None

    def start_gearmand(self) -> None:
        if self.gearmand is None:
            return
        inherited = os.environ.pop(GEARMAND_PID_ENV, None)
        if inherited is not None and inherited.isdigit() and self.gearmand.adopt(int(inherited)):
            logger.info("Reload: adopted gearmand %s on %s (pid %s)", inherited, self.gearmand.address, self.pid)
            return
        self.gearmand.start()

    def stop_gearmand_last(self) -> None:
        # gearmand goes after every worker, so that no child loses its server mid-job,
        # and a moment later still: a child's last WORK_COMPLETE may still be on its way
        # through gearmand to the waiting client when the child exits.
        if self.gearmand is None or self.children:
            self._children_gone_at = None
            return
        now = time.monotonic()
        if self._children_gone_at is None:
            self._children_gone_at = now
        if now - self._children_gone_at < GEARMAND_STOP_DELAY:
            return
        self.gearmand.stop()
        self.gearmand.kill_if_stuck()

    # ---- scaling, readiness, operator requests ---------------------------------------

    def scale(self, task: str, count: int) -> int:
        """Set the child count of ``task``; return the previous count."""
        previous = self.counts[task]
        if count != previous:
            self.counts[task] = count
            logger.info("Scaling task %r from %d to %d children (pid %s)", task, previous, count, self.pid)
        return previous

    def stop_surplus_children(self) -> None:
        """Stop children above each task's count: idle ones first, then starting, then busy."""
        preference = {READY: 0, STARTING: 1, BUSY: 2}
        for task, count in self.counts.items():
            active = self.current_children(task)
            surplus = len(active) - count
            if surplus <= 0:
                continue
            active.sort(key=lambda child: (preference.get(child.state, 3), -child.slot))
            for child in active[:surplus]:
                logger.info(
                    "Stopping child %s of task %r (slot %d, %s) to scale down (pid %s)",
                    child.pid,
                    task,
                    child.slot,
                    child.state,
                    self.pid,
                )
                self.signal_child(child, signal.SIGTERM)

    def notify_ready_once_served(self) -> None:
        """Tell systemd READY=1 once every task's first children have registered."""
        if self.notified_ready or self.reloading:
            return
        for task, count in self.counts.items():
            if self.policy.is_failed(task):
                continue
            if sum(1 for child in self.current_children(task) if child.ready) < count:
                return
        self.notified_ready = True
        logger.info("Every task is served by its configured children (pid %s)", self.pid)
        notify("READY=1", f"MAINPID={self.pid}", "STATUS=Serving")

    def reopen_logs(self) -> None:
        count = reopen_log_files()
        logger.info("Received SIGUSR1: reopened %d log files; forwarding to children (pid %s)", count, self.pid)
        for child in self.children.values():
            self.signal_child(child, signal.SIGUSR1)

    def handle_control_request(self, request: dict) -> dict:
        command = request.get("command")
        if command == "status":
            self.refresh_job_states()
            return build_status(self)
        if command == "scale":
            return scale_request(self, request)
        return {"ok": False, "error": f"unknown command {command!r}; use 'status' or 'scale'"}

    # ---- stopping ----------------------------------------------------------------

    def begin_graceful_stop(self, announce: bool = True) -> None:
        self.stopping = True
        notify("STOPPING=1")
        self._stop_deadline = time.monotonic() + self.graceful_timeout
        if self.validation is not None:
            self.validation.kill()
            self.validation = None
        if self.children and announce:
            logger.info(
                "Waiting up to %g s for the children to finish their jobs; children: %d (pid %s)",
                self.graceful_timeout,
                len(self.children),
                self.pid,
            )
        for child in self.children.values():
            self.signal_child(child, signal.SIGTERM)

    def kill_overdue_children(self) -> None:
        """SIGKILL children past a deadline: a job over its task's job_timeout, or a
        SIGTERM outside a pool stop (a reload retiring it, or scaling down) ignored for
        longer than the graceful timeout."""
        self.kill_jobs_over_timeout()
        now = time.monotonic()
        for child in self.children.values():
            if child.kill_sent:
                continue
            if child.term_sent_at is not None and now - child.term_sent_at >= self.graceful_timeout:
                logger.warning(
                    "Killing child %s of task %r: still running %g s after SIGTERM (pid %s)",
                    child.pid,
                    child.task_name,
                    self.graceful_timeout,
                    self.pid,
                )
                self.signal_child(child, signal.SIGKILL)
                child.kill_sent = True

    def kill_jobs_over_timeout(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            if child.kill_sent:
                continue
            entry = self.entries.get(child.task_name)
            job_timeout = entry.limits.job_timeout if entry is not None else None
            if job_timeout is None or child.job_started_at is None:
                continue
            elapsed = now - child.job_started_at
            if elapsed <= job_timeout:
                continue
            logger.error(
                "Child %s of task %r: job %s ran %.2f s, over job_timeout %g s; killing the child, "
                "and gearmand will requeue the job (pid %s)",
                child.pid,
                child.task_name,
                child.job_handle,
                elapsed,
                job_timeout,
                self.pid,
            )
            child.kill_reason = f"job {child.job_handle} over job_timeout {job_timeout:g} s"
            self.signal_child(child, signal.SIGKILL)
            child.kill_sent = True

    def stop_now(self) -> None:
        if not self.stopping:
            self.begin_graceful_stop(announce=False)
        self._stop_deadline = time.monotonic()
        self.kill_after_deadline()

    def kill_after_deadline(self) -> None:
        if self._stop_deadline is None or time.monotonic() < self._stop_deadline:
            return
        remaining = [child for child in self.children.values() if not child.kill_sent]
        if remaining:
            logger.warning("Killing the %d remaining children (pid %s)", len(remaining), self.pid)
        for child in remaining:
            if child.job_handle is not None:
                logger.warning(
                    "Child %s of task %r is killed in the middle of job %s; gearmand requeues the job",
                    child.pid,
                    child.task_name,
                    child.job_handle,
                )
            self.signal_child(child, signal.SIGKILL)
            child.kill_sent = True

    def signal_child(self, child: ChildProcess, signum: int) -> None:
        if signum == signal.SIGTERM:
            # Each child gets one SIGTERM, however many stop requests arrive.
            if child.term_sent:
                return
            child.term_sent = True
            child.term_sent_at = time.monotonic()
        try:
            os.kill(child.pid, signum)
        except ProcessLookupError:
            pass

