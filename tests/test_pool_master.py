"""Unit tests of PoolMaster that step its loop without forking.

The master module's ``os`` is replaced by FakeOs, whose fork() returns made-up pids,
whose waitpid() returns scripted statuses and whose kill() only records the signal. Its
``time`` is a FakeClock. Report pipes are real pipes, but no process is started.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import signal
import threading

import pytest

from gearman_pool.pool import master as master_module
from gearman_pool.pool import reload as reload_module
from gearman_pool.pool.child import MESSAGE_READY, MESSAGE_RECYCLE
from gearman_pool.pool.master import (
    CURRENT,
    EXIT_ALL_TASKS_FAILED,
    EXIT_OK,
    PREVIOUS,
    ChildProcess,
    PoolMaster,
    describe_exit_status,
)
from gearman_pool.pool.policy import RestartPolicy
from gearman_pool.pool.scoreboard import ScoreboardSlot
from gearman_pool.pool.reload import (
    INHERITED_CHILDREN_ENV,
    RELOAD_PENDING_ENV,
    reexec_master,
    take_inherited_children,
)
from gearman_pool.pool.limits import TaskLimits
from gearman_pool.pool.spec import PoolEntry

START = 1000.0
ECHO = PoolEntry("gearman_worker_echo", "tests.testapp", "echo", 2)
SLEEP = PoolEntry("gearman_worker_sleep", "tests.testapp", "sleep", 3)
EXEC_ARGV = ["/usr/bin/python3", "-m", "django", "gearman_pool", "--workers", "echo=2"]


def exit_status(code: int) -> int:
    """Return the waitpid() status of a process that called exit(code)."""
    return code << 8


class FakeClock:
    def __init__(self):
        self.now = START

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def monotonic_ns(self) -> int:
        return int(self.now * 1e9)


class FakeOs:
    """The os module, except that fork, waitpid, kill and execv only record their calls."""

    def __init__(self):
        self.last_pid = 5000
        self.fork_error: OSError | None = None
        self.forks = 0
        # gc.get_freeze_count() at each fork() call.
        self.frozen_at_fork: list[int] = []
        self.kills: list[tuple[int, int]] = []
        self.waitpid_calls: list[tuple[int, int]] = []
        # waitpid() results in order, as (pid, status) pairs or exceptions to raise. When
        # the list is empty, waitpid() returns (0, 0), meaning that no child has exited.
        self.wait_results: list = []
        self.execv_calls: list[tuple[str, list[str]]] = []
        self.execv_error: OSError | None = None

    def fork(self) -> int:
        self.frozen_at_fork.append(gc.get_freeze_count())
        if self.fork_error is not None:
            raise self.fork_error
        self.forks += 1
        self.last_pid += 1
        return self.last_pid

    def waitpid(self, pid: int, options: int):
        self.waitpid_calls.append((pid, options))
        if not self.wait_results:
            return 0, 0
        result = self.wait_results.pop(0)
        if isinstance(result, BaseException):
            raise result
        return result

    def kill(self, pid: int, signum: int) -> None:
        self.kills.append((pid, signum))

    def execv(self, path: str, argv: list[str]) -> None:
        self.execv_calls.append((path, list(argv)))
        if self.execv_error is not None:
            raise self.execv_error

    def signals_sent(self, signum: int) -> list[int]:
        return [pid for pid, sent in self.kills if sent == signum]

    def __getattr__(self, name):
        return getattr(os, name)


class FakeValidation:
    """A reload.Validation double that starts no `gearman_pool --check` process."""

    created: list[FakeValidation] = []

    def __init__(self, argv):
        self.argv = argv
        self.pid = 9000 + len(FakeValidation.created)
        self.killed = False
        FakeValidation.created.append(self)

    def finish(self, status):
        return os.waitstatus_to_exitcode(status) == 0, "check output"

    def kill(self):
        self.killed = True


class SpyPolicy(RestartPolicy):
    def __init__(self, **options):
        super().__init__(jitter=lambda low, high: 1.0, **options)
        self.successes: list[str] = []

    def record_success(self, task: str) -> None:
        self.successes.append(task)
        super().record_success(task)


@pytest.fixture
def fake_os(monkeypatch):
    fake = FakeOs()
    monkeypatch.setattr(master_module, "os", fake)
    return fake


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(master_module, "time", fake)
    return fake


@pytest.fixture
def closed_connections(monkeypatch):
    calls = []
    monkeypatch.setattr(master_module, "close_connections_before_fork", lambda: calls.append(True))
    return calls


@pytest.fixture
def validations(monkeypatch):
    FakeValidation.created = []
    monkeypatch.setattr(master_module, "Validation", FakeValidation)
    return FakeValidation.created


@pytest.fixture
def clean_environment(monkeypatch):
    # Registered as absent, so monkeypatch removes whatever a test leaves behind.
    monkeypatch.delenv(INHERITED_CHILDREN_ENV, raising=False)
    monkeypatch.delenv(RELOAD_PENDING_ENV, raising=False)


@pytest.fixture
def make_master(fake_os, clock, closed_connections, validations, clean_environment):
    masters = []

    def make(entries=(ECHO,), **options) -> PoolMaster:
        options.setdefault("policy", SpyPolicy())
        master = PoolMaster(list(entries), **options)
        # Tests call step() directly, so the loop's poll() on the wake-up pipe is skipped.
        master.wait_for_event = lambda timeout: None
        masters.append(master)
        return master

    yield make

    for master in masters:
        for child in master.children.values():
            master.close_report_pipe(child)
            if child.scoreboard is not None:
                child.scoreboard.close()


@pytest.fixture
def scoreboard():
    """A scoreboard slot for a ChildProcess that a test builds by hand."""
    slot = ScoreboardSlot.create()
    yield slot
    slot.close()


def start_job(master: PoolMaster, child: ChildProcess, handle: bytes) -> None:
    """Write a job start into the child's slot, as the child does, and let the master read it."""
    child.scoreboard.job_started(handle, master_module.time.monotonic())
    master.refresh_job_states()


def finish_job(master: PoolMaster, child: ChildProcess, jobs_done: int) -> None:
    child.scoreboard.job_finished(jobs_done)
    master.refresh_job_states()


def adopt(master: PoolMaster, records: list[dict], monkeypatch, reload_pending: bool = False) -> None:
    """Hand ``records`` to the master as children of the previous code, as a re-exec does."""
    monkeypatch.setenv(INHERITED_CHILDREN_ENV, json.dumps(records))
    if reload_pending:
        monkeypatch.setenv(RELOAD_PENDING_ENV, "1")
    master.adopt_inherited_children()


def old_child(pid: int, task: str = "echo", slot: int = 1, started_at: float = START - 100) -> dict:
    return {"pid": pid, "task": task, "slot": slot, "fd": -1, "started_at": started_at, "ready": True}


def pids_of(master: PoolMaster, task: str, generation: str = CURRENT) -> list[int]:
    return sorted(
        child.pid
        for child in master.children.values()
        if child.task_name == task and child.generation == generation
    )


def mark_ready(master: PoolMaster, pids) -> None:
    for pid in pids:
        master.handle_report(master.children[pid], MESSAGE_READY)


# ---- describe_exit_status -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (exit_status(0), "exited with code 0"),
        (exit_status(3), "exited with code 3"),
        (signal.SIGKILL, "killed by SIGKILL"),
        (signal.SIGTERM, "killed by SIGTERM"),
        (signal.SIGSEGV | 0x80, "killed by SIGSEGV"),
        (40, "killed by signal 40"),
    ],
)
def test_describe_exit_status(status, expected):
    assert describe_exit_status(status) == expected


# ---- spawning -----------------------------------------------------------------------------


def test_spawn_fills_every_slot(make_master, fake_os, clock, closed_connections):
    master = make_master([ECHO, SLEEP])

    master.spawn_missing_children()

    assert fake_os.forks == 5
    assert closed_connections == [True] * 5
    slots = {task: sorted(child.slot for child in master.current_children(task)) for task in ("echo", "sleep")}
    assert slots == {"echo": [1, 2], "sleep": [1, 2, 3]}
    for child in master.children.values():
        assert child.generation == CURRENT
        assert child.started_at == START
        assert child.report_fd >= 0
        assert not child.ready


def test_spawn_skips_full_slots(make_master, fake_os):
    master = make_master([ECHO, SLEEP])
    master.spawn_missing_children()

    master.spawn_missing_children()

    assert fake_os.forks == 5
    assert len(master.children) == 5


def test_spawn_refills_missing_slot(make_master, fake_os):
    master = make_master([SLEEP])
    master.spawn_missing_children()
    slot_two = next(child for child in master.children.values() if child.slot == 2)
    master.close_report_pipe(slot_two)
    del master.children[slot_two.pid]

    master.spawn_missing_children()

    assert fake_os.forks == 4
    assert sorted(child.slot for child in master.children.values()) == [1, 2, 3]
    assert master.children[fake_os.last_pid].slot == 2


def test_spawn_fork_error(make_master, fake_os, caplog):
    master = make_master()
    fake_os.fork_error = OSError(errno.EAGAIN, "Resource temporarily unavailable")

    assert master.spawn_child(ECHO, 1) is None

    assert master.children == {}
    assert master.policy.state("echo").boot_failures == 1
    assert not master.policy.may_spawn("echo", START)
    assert "Cannot fork a child for task 'echo'" in caplog.text


def test_spawn_outside_main_thread(make_master, fake_os):
    master = make_master()
    errors = []

    def spawn():
        try:
            master.spawn_child(ECHO, 1)
        except RuntimeError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=spawn)
    thread.start()
    thread.join()

    assert errors == ["the pool master must fork from its main thread"]
    assert fake_os.forks == 0


# ---- reaping and respawning ---------------------------------------------------------------


def test_reap_loops_until_zero(make_master, fake_os):
    master = make_master()
    master.spawn_missing_children()
    first, second = sorted(master.children)
    fake_os.wait_results = [(first, exit_status(0)), (second, signal.SIGKILL)]

    master.reap_children()

    assert master.children == {}
    assert fake_os.waitpid_calls == [(-1, os.WNOHANG)] * 3


def test_reap_tolerates_no_children(make_master, fake_os):
    master = make_master()
    master.spawn_missing_children()
    first, second = sorted(master.children)
    fake_os.wait_results = [(first, exit_status(1)), ChildProcessError(errno.ECHILD, "No child processes")]

    master.reap_children()

    assert list(master.children) == [second]
    assert len(fake_os.waitpid_calls) == 2


def test_reap_closes_report_pipe(make_master, fake_os):
    master = make_master()
    master.spawn_missing_children()
    child = master.children[min(master.children)]
    report_fd = child.report_fd
    fake_os.wait_results = [(child.pid, exit_status(0))]

    master.reap_children()

    assert child.report_fd == -1
    with pytest.raises(OSError):
        os.fstat(report_fd)


def test_reap_unknown_pid_quietly(make_master, fake_os, caplog):
    caplog.set_level(logging.DEBUG, logger="gearman_pool.pool.master")
    master = make_master()
    master.spawn_missing_children()
    children = dict(master.children)
    fake_os.wait_results = [(4242, exit_status(0))]

    master.reap_children()

    assert master.children == children
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert "Reaped unknown process 4242 (exited with code 0)" in caplog.text


def test_respawn_waits_for_policy_delay(make_master, fake_os, clock):
    master = make_master([PoolEntry("gearman_worker_echo", "tests.testapp", "echo", 1)])
    master.step()
    (first,) = master.children
    clock.now += 0.1
    fake_os.wait_results = [(first, exit_status(1))]

    master.step()

    assert master.children == {}
    assert fake_os.forks == 1
    assert master.policy.next_spawn_time("echo") == pytest.approx(START + 0.6)
    assert master.next_wait_timeout() == pytest.approx(0.5)

    clock.now = master.policy.next_spawn_time("echo") - 0.01
    master.step()
    assert fake_os.forks == 1

    clock.now = master.policy.next_spawn_time("echo")
    master.step()
    assert fake_os.forks == 2
    (replacement,) = master.children.values()
    assert replacement.pid != first
    assert replacement.slot == 1
    assert replacement.started_at == clock.now


def test_respawn_after_long_run_is_immediate(make_master, fake_os, clock):
    master = make_master([PoolEntry("gearman_worker_echo", "tests.testapp", "echo", 1)])
    master.step()
    (first,) = master.children
    clock.now += 60
    fake_os.wait_results = [(first, signal.SIGKILL)]

    master.step()

    assert fake_os.forks == 2
    assert master.policy.state("echo").boot_failures == 0


def test_child_exit_logged_with_status(make_master, fake_os, clock, caplog):
    master = make_master()
    master.spawn_missing_children()
    pid = min(master.children)
    clock.now += 0.1
    fake_os.wait_results = [(pid, exit_status(3))]

    master.reap_children()

    assert f"Child {pid} of task 'echo' exited with code 3; restarting in 0.5 s" in caplog.text


# ---- reports from children ----------------------------------------------------------------


def test_report_ready(make_master):
    master = make_master()
    child = ChildProcess(pid=7, task_name="echo", slot=1, started_at=START)

    master.handle_report(child, MESSAGE_READY)

    assert child.ready
    assert not child.served_jobs
    assert master.policy.successes == []


def test_first_job_records_success(make_master, scoreboard):
    master = make_master()
    child = ChildProcess(pid=7, task_name="echo", slot=1, started_at=START, scoreboard=scoreboard)
    master.children[child.pid] = child
    master.policy.state("echo").boot_failures = 4

    start_job(master, child, b"H:host:1")
    finish_job(master, child, 1)
    start_job(master, child, b"H:host:2")

    assert child.ready
    assert child.served_jobs
    assert master.policy.successes == ["echo"]
    assert master.policy.state("echo").boot_failures == 0


def test_report_unknown_message_ignored(make_master):
    master = make_master()
    child = ChildProcess(pid=7, task_name="echo", slot=1, started_at=START)

    master.handle_report(child, b"hello\n")

    assert not child.ready
    assert not child.served_jobs


def test_read_report_joins_split_lines(make_master):
    master = make_master()
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    child = ChildProcess(pid=7, task_name="echo", slot=1, started_at=START, report_fd=read_fd)
    master.children[child.pid] = child
    try:
        os.write(write_fd, b"rea")
        master.read_report(child)
        assert not child.ready
        assert child.report_buffer == b"rea"

        os.write(write_fd, b"dy\nrecycle max_jobs 5 reached after 5 jobs\n")
        master.read_report(child)
        assert child.ready
        assert child.recycle_reason == "max_jobs 5 reached after 5 jobs"
        assert child.report_buffer == b""
    finally:
        os.close(write_fd)

    master.read_report(child)

    assert child.report_fd == -1


def test_wait_for_event_reads_pipes(make_master):
    master = make_master()
    del master.wait_for_event
    master._wakeup_read, master._wakeup_write = os.pipe()
    os.set_blocking(master._wakeup_read, False)
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    child = ChildProcess(pid=7, task_name="echo", slot=1, started_at=START, report_fd=read_fd)
    master.children[child.pid] = child
    try:
        os.write(master._wakeup_write, bytes([signal.SIGCHLD]))
        os.write(write_fd, MESSAGE_READY + b"\n")

        master.wait_for_event(0)

        assert child.ready
        # The wake-up byte was drained, so the next read finds the pipe empty.
        with pytest.raises(BlockingIOError):
            os.read(master._wakeup_read, 1)
    finally:
        for fd in (master._wakeup_read, master._wakeup_write, write_fd):
            os.close(fd)
        master._wakeup_read = master._wakeup_write = -1


# ---- stop signals -------------------------------------------------------------------------


def test_sigterm_stops_gracefully(make_master, fake_os):
    master = make_master([ECHO, SLEEP])
    master.spawn_missing_children()

    master._record_signal(signal.SIGTERM, None)
    master.step()

    assert master.stopping
    assert sorted(fake_os.signals_sent(signal.SIGTERM)) == sorted(master.children)
    assert fake_os.signals_sent(signal.SIGKILL) == []
    assert fake_os.forks == 5


def test_repeated_sigterm_one_term_each(make_master, fake_os):
    master = make_master([ECHO, SLEEP])
    master.spawn_missing_children()

    for _ in range(3):
        master._record_signal(signal.SIGTERM, None)
    master.handle_signals()

    assert sorted(fake_os.signals_sent(signal.SIGTERM)) == sorted(master.children)
    # A second SIGTERM means stop now, as README.rst documents, so each child also gets SIGKILL.
    assert sorted(fake_os.signals_sent(signal.SIGKILL)) == sorted(master.children)


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_second_stop_signal_kills(make_master, fake_os, clock, second):
    master = make_master([ECHO, SLEEP])
    master.spawn_missing_children()
    master._record_signal(signal.SIGTERM, None)
    master.step()
    assert fake_os.signals_sent(signal.SIGKILL) == []

    clock.now += 1
    master._record_signal(second, None)
    master.step()

    assert sorted(fake_os.signals_sent(signal.SIGKILL)) == sorted(master.children)
    assert len(fake_os.signals_sent(signal.SIGTERM)) == 5


def test_second_sigint_kills(make_master, fake_os):
    master = make_master()
    master.spawn_missing_children()

    master._record_signal(signal.SIGINT, None)
    master.handle_signals()
    assert fake_os.signals_sent(signal.SIGKILL) == []

    master._record_signal(signal.SIGINT, None)
    master.handle_signals()
    assert sorted(fake_os.signals_sent(signal.SIGKILL)) == sorted(master.children)


def test_sigquit_stops_now(make_master, fake_os):
    master = make_master()
    master.spawn_missing_children()

    master._record_signal(signal.SIGQUIT, None)
    master.handle_signals()

    assert master.stopping
    assert sorted(fake_os.signals_sent(signal.SIGTERM)) == sorted(master.children)
    assert sorted(fake_os.signals_sent(signal.SIGKILL)) == sorted(master.children)


def test_sigchld_only_wakes(make_master, fake_os):
    master = make_master()
    master.spawn_missing_children()

    master._record_signal(signal.SIGCHLD, None)
    master.handle_signals()

    assert not master.stopping
    assert fake_os.kills == []
    assert master._signals == []


def test_kill_after_graceful_timeout(make_master, fake_os, clock):
    master = make_master(graceful_timeout=30)
    master.spawn_missing_children()
    master._record_signal(signal.SIGTERM, None)
    master.step()

    clock.now = START + 29.9
    master.step()
    assert fake_os.signals_sent(signal.SIGKILL) == []
    assert master.next_wait_timeout() == pytest.approx(0.1)

    clock.now = START + 30
    master.step()
    assert sorted(fake_os.signals_sent(signal.SIGKILL)) == sorted(master.children)

    clock.now = START + 35
    master.step()
    assert len(fake_os.signals_sent(signal.SIGKILL)) == 2


def test_kill_ignores_exited_child(make_master, fake_os, monkeypatch):
    master = make_master()
    master.spawn_missing_children()

    def kill(pid, signum):
        raise ProcessLookupError(errno.ESRCH, "No such process")

    monkeypatch.setattr(fake_os, "kill", kill)

    master.stop_now()

    assert all(child.term_sent and child.kill_sent for child in master.children.values())


def test_exit_while_stopping_no_respawn(make_master, fake_os, clock):
    master = make_master()
    master.spawn_missing_children()
    first, second = sorted(master.children)
    master._record_signal(signal.SIGTERM, None)
    master.step()
    clock.now += 0.1
    fake_os.wait_results = [(first, exit_status(0))]

    master.step()

    assert list(master.children) == [second]
    assert fake_os.forks == 2
    assert master.policy.state("echo").boot_failures == 0


def test_stop_kills_validation(make_master, validations):
    master = make_master(exec_argv=EXEC_ARGV)
    master.request_reload()
    (validation,) = validations

    master.begin_graceful_stop()

    assert validation.killed
    assert master.validation is None


# ---- SIGHUP -------------------------------------------------------------------------------


def test_sighup_without_exec_argv(make_master, fake_os, validations, caplog):
    master = make_master()
    master.spawn_missing_children()
    children = dict(master.children)

    master._record_signal(signal.SIGHUP, None)
    master.step()

    assert "cannot re-execute itself" in caplog.text
    assert [record.levelname for record in caplog.records if "SIGHUP" in record.getMessage()] == ["WARNING"]
    assert validations == []
    assert master.validation is None
    assert not master.reload_requested
    assert master.children == children
    assert fake_os.kills == []


def test_sighup_starts_validation(make_master, validations):
    master = make_master(exec_argv=EXEC_ARGV)

    master._record_signal(signal.SIGHUP, None)
    master.handle_signals()

    assert [validation.argv for validation in validations] == [EXEC_ARGV]
    assert master.validation is validations[0]
    assert not master.reload_requested


def test_sighup_during_validation_coalesces(make_master, validations, caplog):
    master = make_master(exec_argv=EXEC_ARGV)
    master.request_reload()

    for _ in range(3):
        master._record_signal(signal.SIGHUP, None)
    master.handle_signals()

    assert len(validations) == 1
    assert master.reload_requested
    assert caplog.text.count("one more reload follows it") == 1


def test_sighup_while_stopping_ignored(make_master, validations):
    master = make_master(exec_argv=EXEC_ARGV)
    master.begin_graceful_stop()

    master._record_signal(signal.SIGHUP, None)
    master.handle_signals()

    assert validations == []
    assert not master.reload_requested


def test_failed_validation_keeps_children(make_master, fake_os, validations, monkeypatch, caplog):
    reexecs = []
    monkeypatch.setattr(master_module, "reexec_master", lambda *arguments: reexecs.append(arguments))
    master = make_master(exec_argv=EXEC_ARGV)
    master.spawn_missing_children()
    master.request_reload()
    fake_os.wait_results = [(validations[0].pid, exit_status(1))]

    master.reap_children()

    assert master.validation is None
    assert len(master.children) == 2
    assert reexecs == []
    assert fake_os.kills == []
    assert "Reload aborted" in caplog.text
    assert "check output" in caplog.text


def test_passed_validation_reexecs(make_master, fake_os, validations, monkeypatch, caplog):
    reexecs = []

    def reexec(argv, children, reload_pending, control_fd=None):
        reexecs.append((argv, sorted(child.pid for child in children), reload_pending))
        # A successful execv() never returns. A failed one raises, and the master keeps serving.
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(master_module, "reexec_master", reexec)
    master = make_master(exec_argv=EXEC_ARGV)
    master.spawn_missing_children()
    master.request_reload()
    master.request_reload()
    fake_os.wait_results = [(validations[0].pid, exit_status(0))]

    master.reap_children()

    assert reexecs == [(EXEC_ARGV, sorted(master.children), True)]
    assert signal.SIGHUP not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert f"Reload failed: cannot re-execute {EXEC_ARGV[0]}" in caplog.text
    assert len(master.children) == 2


def test_failed_validation_runs_pending_reload(make_master, fake_os, validations):
    master = make_master(exec_argv=EXEC_ARGV)
    master.request_reload()
    master.request_reload()
    fake_os.wait_results = [(validations[0].pid, exit_status(1))]

    master.reap_children()

    assert len(validations) == 2
    assert master.validation is validations[1]
    assert not master.reload_requested


# ---- reload handover ----------------------------------------------------------------------


def test_adopt_marks_previous_generation(make_master, monkeypatch):
    master = make_master()

    adopt(master, [old_child(101), old_child(102, slot=2)], monkeypatch, reload_pending=True)

    assert sorted(master.children) == [101, 102]
    for child in master.children.values():
        assert child.generation == PREVIOUS
        assert child.ready
        assert child.report_fd == -1
    assert master.reload_requested
    assert INHERITED_CHILDREN_ENV not in os.environ
    assert RELOAD_PENDING_ENV not in os.environ


def test_adopt_maps_inherited_scoreboard(make_master, monkeypatch, scoreboard):
    master = make_master()
    record = dict(old_child(101), scoreboard_fd=os.dup(scoreboard.fd))

    adopt(master, [record], monkeypatch)
    # The child keeps writing to its own mapping after the master's re-exec.
    scoreboard.job_started(b"H:host:7", START)
    master.refresh_job_states()

    child = master.children[101]
    assert child.job_handle == "H:host:7"
    assert not os.get_inheritable(child.scoreboard.fd)


def test_adopt_unusable_scoreboard_fd(make_master, monkeypatch, caplog):
    master = make_master()
    read_fd, write_fd = os.pipe()
    try:
        with caplog.at_level(logging.WARNING):
            adopt(master, [dict(old_child(101), scoreboard_fd=read_fd)], monkeypatch)
    finally:
        os.close(read_fd)
        os.close(write_fd)

    assert master.children[101].scoreboard is None
    assert f"Cannot map an inherited scoreboard slot (fd {read_fd})" in caplog.text


def test_new_generation_spawned_beside_old(make_master, fake_os, monkeypatch):
    master = make_master()
    adopt(master, [old_child(101), old_child(102, slot=2)], monkeypatch)

    master.step()

    assert fake_os.forks == 2
    assert len(pids_of(master, "echo", CURRENT)) == 2
    assert pids_of(master, "echo", PREVIOUS) == [101, 102]


def test_retire_waits_for_ready_child(make_master, fake_os, monkeypatch):
    master = make_master()
    adopt(master, [old_child(101), old_child(102, slot=2)], monkeypatch)
    master.spawn_missing_children()

    master.retire_replaced_children()
    master.step()

    assert fake_os.kills == []


def test_retire_one_old_per_ready_new(make_master, fake_os, monkeypatch):
    master = make_master()
    adopt(
        master,
        [old_child(101, started_at=START - 50), old_child(102, slot=2, started_at=START - 90)],
        monkeypatch,
    )
    master.spawn_missing_children()
    first_new, second_new = pids_of(master, "echo")

    mark_ready(master, [first_new])
    master.retire_replaced_children()
    master.retire_replaced_children()

    # The oldest previous child goes first.
    assert fake_os.kills == [(102, signal.SIGTERM)]

    mark_ready(master, [second_new])
    master.retire_replaced_children()

    assert fake_os.kills == [(102, signal.SIGTERM), (101, signal.SIGTERM)]


def test_retire_all_when_enough_ready(make_master, fake_os, monkeypatch):
    master = make_master()
    adopt(master, [old_child(101), old_child(102, slot=2), old_child(103, slot=3)], monkeypatch)
    master.spawn_missing_children()

    mark_ready(master, pids_of(master, "echo"))
    master.retire_replaced_children()

    assert sorted(fake_os.signals_sent(signal.SIGTERM)) == [101, 102, 103]


def test_retire_task_no_longer_configured(make_master, fake_os, monkeypatch):
    master = make_master()
    adopt(master, [old_child(101), old_child(201, task="gone"), old_child(202, task="gone", slot=2)], monkeypatch)
    master.spawn_missing_children()

    master.retire_replaced_children()

    assert sorted(fake_os.signals_sent(signal.SIGTERM)) == [201, 202]


def test_old_child_exit_not_respawned(make_master, fake_os, monkeypatch):
    master = make_master()
    adopt(master, [old_child(101), old_child(102, slot=2)], monkeypatch)
    master.step()
    fake_os.wait_results = [(101, signal.SIGTERM)]

    master.step()

    assert 101 not in master.children
    assert fake_os.forks == 2
    assert master.policy.state("echo").boot_failures == 0


def test_pending_reload_after_old_children_exit(make_master, fake_os, validations, monkeypatch):
    master = make_master(exec_argv=EXEC_ARGV)
    adopt(master, [old_child(101)], monkeypatch, reload_pending=True)
    master.spawn_missing_children()
    mark_ready(master, pids_of(master, "echo"))

    master.retire_replaced_children()
    assert validations == []

    fake_os.wait_results = [(101, signal.SIGTERM)]
    master.reap_children()
    master.retire_replaced_children()

    assert len(validations) == 1
    assert not master.reload_requested


# ---- every task failed --------------------------------------------------------------------


def test_one_failed_task_keeps_pool(make_master):
    master = make_master([ECHO, SLEEP])
    master.policy.state("echo").failed = True

    master.stop_if_every_task_failed()

    assert not master.stopping
    assert master.exit_code == EXIT_OK


def test_every_task_failed_exits(make_master, fake_os):
    master = make_master([ECHO, SLEEP])
    master.policy.state("echo").failed = True
    master.policy.state("sleep").failed = True

    master.stop_if_every_task_failed()

    assert master.stopping
    assert master.exit_code == EXIT_ALL_TASKS_FAILED


def test_every_task_failed_old_serving(make_master, monkeypatch):
    master = make_master([ECHO])
    adopt(master, [old_child(101)], monkeypatch)
    master.policy.state("echo").failed = True

    master.stop_if_every_task_failed()

    assert not master.stopping
    assert master.exit_code == EXIT_OK


def test_boot_failures_end_pool(make_master, fake_os, clock):
    single = PoolEntry("gearman_worker_crashboot", "tests.testapp", "crashboot", 1)
    master = make_master([single], policy=SpyPolicy(max_boot_failures=3))

    for _ in range(3):
        clock.now = max(clock.now, master.policy.next_spawn_time("crashboot"))
        master.step()
        (pid,) = master.children
        clock.now += 0.1
        fake_os.wait_results = [(pid, exit_status(3))]
        master.step()

    assert fake_os.forks == 3
    assert master.policy.is_failed("crashboot")
    assert master.stopping
    assert master.exit_code == EXIT_ALL_TASKS_FAILED


# ---- the environment handover across execv() ---------------------------------------------


@pytest.fixture
def reload_os(monkeypatch):
    fake = FakeOs()
    monkeypatch.setattr(reload_module, "os", fake)
    return fake


def test_inherited_children_round_trip(reload_os, clean_environment, scoreboard):
    read_fd, write_fd = os.pipe()
    children = [
        ChildProcess(
            pid=101, task_name="echo", slot=1, started_at=START, report_fd=read_fd, scoreboard=scoreboard, ready=True
        ),
        ChildProcess(pid=102, task_name="sleep", slot=2, started_at=START + 1.5),
    ]
    try:
        reexec_master(EXEC_ARGV, children, reload_pending=False)

        assert os.get_inheritable(read_fd)
        assert os.get_inheritable(scoreboard.fd)
    finally:
        os.close(read_fd)
        os.close(write_fd)

    assert reload_os.execv_calls == [(EXEC_ARGV[0], EXEC_ARGV)]
    inherited, pending = take_inherited_children()
    assert inherited == [
        {
            "pid": 101,
            "task": "echo",
            "slot": 1,
            "fd": read_fd,
            "scoreboard_fd": scoreboard.fd,
            "started_at": START,
            "ready": True,
        },
        {"pid": 102, "task": "sleep", "slot": 2, "fd": -1, "scoreboard_fd": -1, "started_at": START + 1.5, "ready": False},
    ]
    assert not pending
    assert INHERITED_CHILDREN_ENV not in os.environ
    assert RELOAD_PENDING_ENV not in os.environ


def test_reload_pending_round_trip(reload_os, clean_environment):
    reexec_master(EXEC_ARGV, [], reload_pending=True)

    assert take_inherited_children() == ([], True)
    assert RELOAD_PENDING_ENV not in os.environ


def test_execv_failure_clears_environment(reload_os, clean_environment):
    reload_os.execv_error = FileNotFoundError(errno.ENOENT, "No such file or directory")
    children = [ChildProcess(pid=101, task_name="echo", slot=1, started_at=START)]

    with pytest.raises(FileNotFoundError):
        reexec_master(EXEC_ARGV, children, reload_pending=True)

    assert INHERITED_CHILDREN_ENV not in os.environ
    assert RELOAD_PENDING_ENV not in os.environ


def test_take_without_environment(clean_environment):
    assert take_inherited_children() == ([], False)


@pytest.mark.parametrize("text", ["{not json", "5", '{"pid": 101}'])
def test_take_malformed_json(clean_environment, monkeypatch, caplog, text):
    monkeypatch.setenv(INHERITED_CHILDREN_ENV, text)

    assert take_inherited_children() == ([], False)

    assert INHERITED_CHILDREN_ENV not in os.environ
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"Ignoring malformed {INHERITED_CHILDREN_ENV}" in errors[0].getMessage()


def test_take_skips_records_without_pid(clean_environment, monkeypatch):
    records = [{"pid": 101, "task": "echo"}, {"task": "echo"}, {"pid": "102"}, "103", None]
    monkeypatch.setenv(INHERITED_CHILDREN_ENV, json.dumps(records))

    inherited, _pending = take_inherited_children()

    assert inherited == [{"pid": 101, "task": "echo"}]


# ---- deadlines outside a stop ---------------------------------------------------------------


def test_retired_child_killed_after_timeout(make_master, fake_os, clock, monkeypatch):
    master = make_master(graceful_timeout=10)
    adopt(master, [old_child(101), old_child(102, slot=2)], monkeypatch)
    master.spawn_missing_children()
    mark_ready(master, pids_of(master, "echo"))
    master.retire_replaced_children()

    clock.now += 9
    master.kill_overdue_children()
    assert fake_os.signals_sent(signal.SIGKILL) == []

    clock.now += 1
    master.kill_overdue_children()
    assert sorted(fake_os.signals_sent(signal.SIGKILL)) == [101, 102]

    master.kill_overdue_children()
    assert sorted(fake_os.signals_sent(signal.SIGKILL)) == [101, 102]


def test_every_task_failed_current_serving(make_master):
    master = make_master([ECHO])
    master.spawn_missing_children()
    master.policy.state("echo").failed = True

    master.stop_if_every_task_failed()

    assert not master.stopping
    assert master.exit_code == EXIT_OK


# ---- job state, recycling, scaling ------------------------------------------------------------


def test_scoreboard_tracks_job(make_master, clock, scoreboard):
    master = make_master()
    child = ChildProcess(pid=7, task_name="echo", slot=1, started_at=START, scoreboard=scoreboard)
    master.children[child.pid] = child

    start_job(master, child, b"H:host:9")
    assert child.state == "busy"
    assert child.job_handle == "H:host:9"
    assert child.job_started_at == START

    finish_job(master, child, 12)
    assert child.state == "ready"
    assert child.job_handle is None
    assert child.job_started_at is None
    assert child.jobs_done == 12


def test_job_state_read_at_reap(make_master, fake_os):
    master = make_master([PoolEntry("gearman_worker_echo", "tests.testapp", "echo", 1)])
    master.spawn_missing_children()
    (pid,) = pids_of(master, "echo")
    slot = master.children[pid].scoreboard
    # The child ran a job and crashed before the master's next step read its slot.
    slot.job_started(b"H:host:4", START)
    fake_os.wait_results = [(pid, exit_status(1))]

    master.reap_children()

    assert master.policy.successes == ["echo"]
    assert slot.memory.closed


def test_fork_with_objects_frozen(make_master, fake_os):
    master = make_master()

    master.spawn_missing_children()

    assert len(fake_os.frozen_at_fork) == 2
    assert min(fake_os.frozen_at_fork) > 0
    assert gc.get_freeze_count() == 0


def test_fork_failure_unfreezes(make_master, fake_os):
    master = make_master()
    fake_os.fork_error = OSError(errno.EAGAIN, "Resource temporarily unavailable")

    master.spawn_missing_children()

    assert fake_os.frozen_at_fork
    assert gc.get_freeze_count() == 0


def test_spawn_gives_child_own_slot(make_master):
    master = make_master()
    master.spawn_missing_children()
    first, second = (master.children[pid] for pid in pids_of(master, "echo"))

    first.scoreboard.job_started(b"H:host:1", START)
    master.refresh_job_states()

    assert first.job_handle == "H:host:1"
    assert second.job_handle is None
    assert first.scoreboard.fd != second.scoreboard.fd


def test_job_timeout_kills_child(make_master, fake_os, clock, caplog):
    limited = PoolEntry("gearman_worker_echo", "tests.testapp", "echo", 1, TaskLimits(job_timeout=5))
    master = make_master([limited])
    master.spawn_missing_children()
    (pid,) = pids_of(master, "echo")
    start_job(master, master.children[pid], b"H:host:3")

    clock.now += 5
    master.kill_overdue_children()
    assert fake_os.signals_sent(signal.SIGKILL) == []

    clock.now += 0.5
    with caplog.at_level(logging.ERROR):
        master.kill_overdue_children()
    assert fake_os.signals_sent(signal.SIGKILL) == [pid]
    assert "job H:host:3 ran 5.50 s, over job_timeout 5 s" in caplog.text


def test_wait_ends_at_job_deadline(make_master, clock):
    limited = PoolEntry("gearman_worker_echo", "tests.testapp", "echo", 1, TaskLimits(job_timeout=5))
    master = make_master([limited])
    master.spawn_missing_children()
    (pid,) = pids_of(master, "echo")
    assert master.next_wait_timeout() == pytest.approx(master_module.IDLE_WAIT)

    start_job(master, master.children[pid], b"H:host:3")
    clock.now += 4.5

    assert master.next_wait_timeout() == pytest.approx(0.5 + master_module.JOB_TIMEOUT_MARGIN)


@pytest.mark.parametrize("job_timeout, expected", [(0.4, 0.1), (0.01, 0.05), (60, 1.0)])
def test_wait_short_for_short_job_timeout(make_master, job_timeout, expected):
    limited = PoolEntry("gearman_worker_echo", "tests.testapp", "echo", 1, TaskLimits(job_timeout=job_timeout))
    master = make_master([limited])
    master.spawn_missing_children()

    assert master.next_wait_timeout() == pytest.approx(expected)


def test_job_timeout_kills_during_stop(make_master, fake_os, clock, caplog):
    limited = PoolEntry("gearman_worker_echo", "tests.testapp", "echo", 1, TaskLimits(job_timeout=5))
    master = make_master([limited])
    master.spawn_missing_children()
    (pid,) = pids_of(master, "echo")
    start_job(master, master.children[pid], b"H:host:6")
    master.begin_graceful_stop()
    clock.now += 4.5

    assert master.next_wait_timeout() == pytest.approx(0.5 + master_module.JOB_TIMEOUT_MARGIN)

    clock.now += 1.5
    with caplog.at_level(logging.ERROR):
        master.step()

    assert fake_os.signals_sent(signal.SIGKILL) == [pid]
    assert "job H:host:6 ran 6.00 s, over job_timeout 5 s" in caplog.text


def test_recycled_child_replaced_at_once(make_master, fake_os, clock, caplog):
    master = make_master([PoolEntry("gearman_worker_echo", "tests.testapp", "echo", 1)])
    master.spawn_missing_children()
    (pid,) = pids_of(master, "echo")
    master.handle_report(master.children[pid], MESSAGE_RECYCLE + b" max_jobs 10 reached after 10 jobs\n")
    fake_os.wait_results = [(pid, exit_status(0))]

    with caplog.at_level(logging.INFO):
        master.step()

    assert "recycled (max_jobs 10 reached after 10 jobs)" in caplog.text
    assert len(pids_of(master, "echo")) == 1
    assert pids_of(master, "echo") != [pid]


def test_ttin_ttou_scale_every_task(make_master, fake_os):
    master = make_master([ECHO, SLEEP])
    master.step()
    assert master.counts == {"echo": 2, "sleep": 3}

    master._signals.append(signal.SIGTTIN)
    master.step()
    assert master.counts == {"echo": 3, "sleep": 4}
    assert len(pids_of(master, "echo")) == 3

    for _ in range(5):
        master._signals.append(signal.SIGTTOU)
        master.step()
    assert master.counts == {"echo": 1, "sleep": 1}
    assert len(fake_os.signals_sent(signal.SIGTERM)) == 2 + 3


def test_scale_down_stops_idle_first(make_master, fake_os):
    master = make_master([PoolEntry("gearman_worker_echo", "tests.testapp", "echo", 3)])
    master.spawn_missing_children()
    first, second, third = pids_of(master, "echo")
    for pid in (first, second, third):
        master.handle_report(master.children[pid], MESSAGE_READY)
    start_job(master, master.children[third], b"H:host:1")

    master.scale("echo", 1)
    master.stop_surplus_children()

    assert sorted(fake_os.signals_sent(signal.SIGTERM)) == [first, second]


def test_scale_request_validates(make_master):
    from gearman_pool.pool.status import scale_request

    master = make_master()

    assert scale_request(master, {"task": "nope", "count": 1})["ok"] is False
    assert "unknown task 'nope'" in scale_request(master, {"task": "nope", "count": 1})["error"]
    assert scale_request(master, {"task": "echo", "count": -1})["ok"] is False
    assert scale_request(master, {"task": "echo", "count": "3"})["ok"] is False
    assert scale_request(master, {"task": "echo"})["ok"] is False
    assert scale_request(master, {"task": "echo", "delta": 2}) == {"ok": True, "task": "echo", "previous": 2, "count": 4}
    assert scale_request(master, {"task": "echo", "count": 0}) == {"ok": True, "task": "echo", "previous": 4, "count": 0}


def test_status_lists_children(make_master, fake_os, monkeypatch):
    from gearman_pool.pool import status as status_module

    monkeypatch.setattr(status_module, "child_memory", lambda pid: 1024)
    master = make_master()
    master.spawn_missing_children()
    first, _second = pids_of(master, "echo")
    # The status request reads the slots itself, without a loop step in between.
    master.children[first].scoreboard.job_started(b"H:host:5", START)

    status = master.handle_control_request({"command": "status"})

    assert status["ok"] is True
    assert [row["state"] for row in status["children"]] == ["busy", "starting"]
    assert status["children"][0]["job_handle"] == "H:host:5"
    assert status["tasks"][0]["configured"] == 2
    assert status["totals"] == {"children": 2, "busy": 1, "jobs_done": 0, "memory_uss": 2048}
    assert master.handle_control_request({"command": "bogus"})["ok"] is False
