"""Fixtures for gearmand servers and for management commands run as child processes.

The shared gearmand: runtests.py starts one and sets GEARMAN_TEST_SERVER. Under a plain
`pytest` run, pytest_configure() below starts one instead. pytest-django imports
tests.settings before any conftest.py is loaded, so settings.py cannot see an address that is
chosen here. pytest_configure() therefore also sets settings.GEARMAN_SERVERS, once, before
the first test. Child processes read GEARMAN_TEST_SERVER when they import the settings.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from gearman_pool.address import ServerAddress
from gearman_pool.client import GearmanClient
from gearman_pool.worker import GearmanWorker
from tests.gearmand import GearmandError, GearmandProcess
from tests.helpers import WORKER_JOIN_TIMEOUT, WorkerThread
from tests.project_warnings import WARNING_LOG_ENV, is_fork_with_threads, read_log

try:
    import psutil
except ImportError:  # psutil is in the `test` extra, but the fixtures work without it.
    psutil = None

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_ENV = "GEARMAN_TEST_SERVER"
CONTROL_SOCKET_ENV = "GEARMAN_POOL_TEST_CONTROL_SOCKET"
MANAGE_TIMEOUT = 60.0
KILL_WAIT_TIMEOUT = 5.0

session_gearmand_key = pytest.StashKey[GearmandProcess]()
# Fork-with-threads warnings seen in this process, as "test id: file:line: message" lines.
fork_warnings: list[str] = []
owned_warning_log_key = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("help") or config.getoption("version"):
        return
    if not os.environ.get(WARNING_LOG_ENV):
        descriptor, log_path = tempfile.mkstemp(prefix="gearman_pool-warnings-", suffix=".log")
        os.close(descriptor)
        os.environ[WARNING_LOG_ENV] = log_path
        config.stash[owned_warning_log_key] = log_path
    if os.environ.get(SERVER_ENV):
        return

    try:
        server = GearmandProcess().start()
    except GearmandError as error:
        raise pytest.UsageError(f"Cannot start gearmand for the tests: {error}") from error
    config.stash[session_gearmand_key] = server
    os.environ[SERVER_ENV] = server.address

    from django.conf import settings

    if settings.configured:
        settings.GEARMAN_SERVERS = [server.address]


def pytest_warning_recorded(warning_message: warnings.WarningMessage, nodeid: str) -> None:
    if issubclass(warning_message.category, DeprecationWarning) and is_fork_with_threads(
        warning_message.message
    ):
        location = f"{warning_message.filename}:{warning_message.lineno}"
        fork_warnings.append(f"{nodeid or 'pytest'}: {location}: {warning_message.message}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run when a fork happened while the forking process had threads.

    Python 3.12 and later warn about it. The warning is a bug to fix: a child forked
    beside a running thread can inherit a lock that the thread held and deadlock on it.
    """
    log_path = os.environ.get(WARNING_LOG_ENV)
    if log_path:
        fork_warnings.extend(read_log(log_path))
    if fork_warnings and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    if not fork_warnings:
        return
    terminalreporter.section("fork with threads", sep="=", red=True)
    for line in fork_warnings:
        terminalreporter.write_line(line)
    terminalreporter.write_line(
        f"{len(fork_warnings)} fork(s) while the process had more than one thread; the run fails"
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    log_path = config.stash.get(owned_warning_log_key, None)
    if log_path:
        os.environ.pop(WARNING_LOG_ENV, None)
        with contextlib.suppress(FileNotFoundError):
            os.remove(log_path)
    server = config.stash.get(session_gearmand_key, None)
    if server is not None:
        server.stop()
        del config.stash[session_gearmand_key]
        del os.environ[SERVER_ENV]

    remove_temporary_sqlite_files()


def remove_temporary_sqlite_files() -> None:
    """Delete the SQLite file that tests/settings.py picked for this run, if it still exists.

    pytest-django deletes the test database file itself, but only in a run that used the
    database. A management command started by a test can create the file in other runs.
    """
    from django.conf import settings

    if not settings.configured or not getattr(settings, "SQLITE_PATH_IS_TEMPORARY", False):
        return
    for suffix in ("", "-journal", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{settings.SQLITE_PATH}{suffix}")


def pytest_report_header(config: pytest.Config) -> str:
    source = "started by this pytest run" if session_gearmand_key in config.stash else SERVER_ENV
    return f"gearmand: {os.environ.get(SERVER_ENV)} ({source})"


@pytest.fixture(scope="session")
def gearmand_address() -> str:
    """Address "127.0.0.1:PORT" of the gearmand shared by the whole test session."""
    return os.environ[SERVER_ENV]


@pytest.fixture
def gearmand_factory() -> Iterator[Callable[..., GearmandProcess]]:
    """Start private gearmand servers with extra arguments. All are stopped after the test.

    Example: `server = gearmand_factory("--job-retries=1")`.
    """
    servers: list[GearmandProcess] = []

    def start(*extra_args: str) -> GearmandProcess:
        server = GearmandProcess(extra_args=extra_args)
        servers.append(server)
        return server.start()

    yield start

    for server in servers:
        server.stop()


@pytest.fixture
def private_gearmand(gearmand_factory: Callable[..., GearmandProcess]) -> GearmandProcess:
    """A gearmand for one test, which may stop, restart or reconfigure it (e.g. maxqueue)."""
    return gearmand_factory()


class ManageProcess(subprocess.Popen):
    """A `python -m django` child process whose stdout and stderr go to files."""

    def __init__(self, args: Sequence[str], *, stdout_path: Path, stderr_path: Path, **kwargs):
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
            super().__init__(args, stdout=stdout, stderr=stderr, **kwargs)

    def read_stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def read_stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def manage_command(args: Sequence[str], settings: str = "tests.settings") -> list[str]:
    return [sys.executable, "-m", "django", *args, f"--settings={settings}"]


def manage_env(gearmand_address: str, overrides: Mapping[str, str] | None) -> dict[str, str]:
    """Build the environment of a management command started by a test.

    The child uses the shared gearmand and the test database that pytest-django created.
    `overrides` may replace any variable, e.g. GEARMAN_TEST_SERVER with a private server.
    """
    env = dict(os.environ)
    python_path = [str(REPO_ROOT)]
    if env.get("PYTHONPATH"):
        python_path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(python_path)
    env[SERVER_ENV] = gearmand_address
    env["TEST_DB_USE_TEST_NAME"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    # Each pool gets its own control socket, so pools of concurrent test runs never meet.
    # The path stays short: a unix socket path is limited to 107 bytes.
    env[CONTROL_SOCKET_ENV] = os.path.join(tempfile.gettempdir(), f"gp-{uuid.uuid4().hex[:12]}.sock")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if overrides:
        env.update(overrides)
    return env


def kill_process_tree(process: subprocess.Popen) -> None:
    """SIGKILL a child process and, where psutil is installed, all its descendants, and reap it.

    The process is stopped (SIGSTOP) first, so it cannot start new children while they are
    listed. Without psutil only the process itself is killed.
    """
    if process.poll() is None:
        descendants = []
        if psutil is not None:
            try:
                os.kill(process.pid, signal.SIGSTOP)
                descendants = psutil.Process(process.pid).children(recursive=True)
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass
        for descendant in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                descendant.kill()
        process.kill()
        # Orphaned descendants are reaped by init. Waiting for them here makes sure that none
        # of them still has a port or a database connection open when the next test starts.
        if descendants:
            psutil.wait_procs(descendants, timeout=KILL_WAIT_TIMEOUT)
    process.wait()


@pytest.fixture
def run_manage(gearmand_address: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run a management command with tests.settings in a child process and return the result.

    Call as `run_manage("gearman_submit_job", "task", env={...}, timeout=60, input=None)`.
    stdout and stderr are captured as text. On a timeout, the whole process tree is killed and
    subprocess.TimeoutExpired is raised.
    """

    def run(
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = MANAGE_TIMEOUT,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        command = manage_command(args)
        with subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=manage_env(gearmand_address, env),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as process:
            try:
                stdout, stderr = process.communicate(input, timeout=timeout)
            except BaseException:
                kill_process_tree(process)
                raise
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    return run


@pytest.fixture
def spawn_manage(gearmand_address: str, tmp_path: Path) -> Iterator[Callable[..., ManageProcess]]:
    """Start a management command with tests.settings in the background.

    Call as `spawn_manage("gearman_pool", "--workers=...", env={...})`; `settings` names
    another settings module. The returned process
    writes its stdout and stderr to files in tmp_path (see ManageProcess.read_stdout). It shares
    the process group of pytest. After the test, every process started here is killed with
    SIGKILL, together with its descendants, and reaped.
    """
    processes: list[ManageProcess] = []
    counter = itertools.count(1)

    def spawn(*args: str, env: Mapping[str, str] | None = None, settings: str = "tests.settings") -> ManageProcess:
        number = next(counter)
        process = ManageProcess(
            manage_command(args, settings),
            stdout_path=tmp_path / f"manage-{number}.stdout",
            stderr_path=tmp_path / f"manage-{number}.stderr",
            cwd=REPO_ROOT,
            env=manage_env(gearmand_address, env),
            stdin=subprocess.DEVNULL,
        )
        processes.append(process)
        return process

    yield spawn

    for process in processes:
        kill_process_tree(process)


@pytest.fixture
def address(gearmand_address) -> ServerAddress:
    """The address of the shared gearmand, as a ServerAddress."""
    return ServerAddress.parse(gearmand_address)


@pytest.fixture
def make_client():
    clients = []

    def make(servers, **kwargs) -> GearmanClient:
        client = GearmanClient(servers, **kwargs)
        clients.append(client)
        return client

    yield make

    for client in clients:
        client.close()


@pytest.fixture
def gearman_client(make_client, address) -> GearmanClient:
    """A GearmanClient of the shared gearmand.

    Not named `client`, because that would replace pytest-django's Django test client.
    """
    return make_client([address])


@pytest.fixture
def start_worker():
    """Start GearmanWorker threads; each is stopped, joined and closed after the test."""
    threads: list[WorkerThread] = []

    def start(servers, handlers, max_jobs=None, **kwargs) -> WorkerThread:
        thread = WorkerThread(GearmanWorker(servers, handlers, **kwargs), max_jobs)
        thread.start()
        threads.append(thread)
        return thread

    yield start

    for thread in threads:
        thread.worker.request_stop()
    for thread in threads:
        thread.join(WORKER_JOIN_TIMEOUT)
        assert not thread.is_alive(), "worker thread did not stop"
        thread.worker.close()
