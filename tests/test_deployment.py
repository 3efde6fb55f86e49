"""The deployment files in conf/ against the real programs that read them.

The supervisord tests run the pool under supervisord 4 with the program section of
conf/supervisor-gearman_pool.conf. Only the command, the directory, the user, the log
path, autostart and the environment change, so the stop and kill settings are tested as
shipped. The other tests check the systemd unit (with systemd-analyze where installed),
the systemd notifications the master sends, and log reopening on SIGUSR1 and through the
logrotate snippet.
"""

from __future__ import annotations

import concurrent.futures
import configparser
import contextlib
import grp
import os
import pprint
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from gearman_pool.address import ServerAddress
from gearman_pool.client import GearmanClient
from tests.conftest import CONTROL_SOCKET_ENV, REPO_ROOT, SERVER_ENV
from tests.gearmand import pick_free_port
from tests.helpers import child_pids, running_count, wait_until, worker_count

psutil = pytest.importorskip("psutil")

CONF_DIR = REPO_ROOT / "conf"
SUPERVISOR_CONF = CONF_DIR / "supervisor-gearman_pool.conf"
SYSTEMD_UNIT = CONF_DIR / "gearman_pool.service"
LOGROTATE_CONF = CONF_DIR / "logrotate-gearman_pool"
# Paths in the shipped files that the tests replace with paths in tmp_path.
SHIPPED_LOG_PATH = "/var/log/myproject/gearman_pool.log"
SHIPPED_PID_PATH = "/run/myproject/gearman_pool.pid"

GRACEFUL_TIMEOUT = 5
# Seconds a pool may take to start and register every child at gearmand.
POOL_START_TIMEOUT = 30.0
# Seconds for one supervisorctl command. `stop` can take stopwaitsecs (40 in the shipped
# file) before supervisord kills the process group.
SUPERVISORCTL_TIMEOUT = 60.0
# Seconds for supervisord to exit after `supervisorctl shutdown`, and for a stopped pool's
# processes to disappear.
EXIT_TIMEOUT = 30.0
# Seconds to wait for one datagram on the NOTIFY_SOCKET listener.
NOTIFY_TIMEOUT = 20.0
SLEEP_JOB_SECONDS = b"2"
# Long enough that the job still runs when the test checks gearmand during the stop.
LONG_SLEEP_JOB_SECONDS = b"3"
# Seconds to give a gearmand that got SIGTERM to exit before checking that it runs.
GEARMAND_EXIT_WAIT = 0.3
# Unix socket paths are limited to 107 bytes.
MAX_SOCKET_PATH = 100


def short_tmp_path(prefix: str, suffix: str) -> str:
    """Return a unique path in the system temp directory, short enough for a unix socket."""
    return os.path.join(tempfile.gettempdir(), f"{prefix}-{uuid.uuid4().hex[:12]}{suffix}")


def is_alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_with_env(name: str, value: str) -> list[psutil.Process]:
    """Return the live processes whose environment sets ``name`` to ``value``."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(name) == value and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def submit_foreground(address: str, task: str, data: bytes) -> bytes:
    """Submit a foreground job to gearmand at ``address`` and return its result."""
    with GearmanClient([ServerAddress.parse(address)]) as client:
        return client.submit_job(task.encode(), data, background=False, timeout=30).result


class ForegroundJob(threading.Thread):
    """Runs submit_foreground() in a thread and keeps its result or exception."""

    def __init__(self, address: str, task: str, data: bytes):
        super().__init__(daemon=True)
        self.address = address
        self.task = task
        self.data = data
        self.result: bytes | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = submit_foreground(self.address, self.task, self.data)
        except BaseException as exc:
            self.error = exc


def graceful_timeout_of(command: str) -> float:
    argv = shlex.split(command)
    return float(argv[argv.index("--graceful-timeout") + 1])


def pidfile_of(command: str) -> str:
    argv = shlex.split(command)
    return argv[argv.index("--pidfile") + 1]


def messages_of(text: str, pid: int, logger_name: str) -> list[str]:
    """Return the messages that process ``pid`` logged through ``logger_name``.

    Lines have the format "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s".
    """
    pattern = re.compile(rf"^\S+ \S+ {pid} \w+ {re.escape(logger_name)}: (.*)$", re.MULTILINE)
    return pattern.findall(text)


# supervisord


def read_program_section(text: str) -> tuple[str, list[str]]:
    """Return the program name and the lines of the only section of a supervisor program file."""
    headers = re.findall(r"^\[program:([^\]]+)\]\s*$", text, flags=re.MULTILINE)
    assert len(headers) == 1, (
        f"expected one [program:NAME] section in {SUPERVISOR_CONF}, found {headers}"
    )
    lines = text.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("[program:"))
    return headers[0], lines[start:]


def rewrite_program_section(lines: list[str], settings: Mapping[str, str | None]) -> str:
    """Replace the value of each key in ``settings``, drop keys set to None, append new keys.

    Comments and every other line stay as they are.
    """
    output = []
    seen = set()
    for line in lines:
        match = re.match(r"^\s*([A-Za-z_]+)\s*=", line)
        key = match.group(1) if match else None
        if key in settings:
            seen.add(key)
            if settings[key] is not None:
                output.append(f"{key}={settings[key]}")
            continue
        output.append(line)
    output += [
        f"{key}={value}" for key, value in settings.items() if key not in seen and value is not None
    ]
    return "\n".join(output) + "\n"


def supervisor_environment(variables: Mapping[str, str]) -> str:
    # supervisord expands %(name)s in values, so a literal % is written as %%.
    return ",".join(f'{key}="{value.replace("%", "%%")}"' for key, value in variables.items())


class SupervisedPool:
    """A daemonized supervisord in tmp_path that runs the program of the shipped conf file."""

    def __init__(self, tmp_path: Path, pool_args: list[str], server_address: str):
        self.tmp_path = tmp_path
        self.server_address = server_address
        self.socket_path = tmp_path / "supervisor.sock"
        assert len(str(self.socket_path)) < MAX_SOCKET_PATH, (
            f"socket path too long: {self.socket_path}"
        )
        self.conf_path = tmp_path / "supervisord.conf"
        self.supervisord_pidfile = tmp_path / "supervisord.pid"
        self.supervisord_log = tmp_path / "supervisord.log"
        self.pool_log = tmp_path / "pool.stdout.log"
        self.pool_pidfile = tmp_path / "pool.pid"
        # Every process of the pool inherits this value, so the test finds them all,
        # gearmand started with --with-gearmand included.
        self.control_socket = short_tmp_path("gp-sv", ".sock")
        self.supervisord: psutil.Process | None = None

        command = shlex.join(
            [
                sys.executable,
                "-m",
                "django",
                *pool_args,
                "--pidfile",
                str(self.pool_pidfile),
                "--settings=tests.settings",
            ]
        )
        environment = {
            "PYTHONPATH": str(REPO_ROOT),
            SERVER_ENV: server_address,
            CONTROL_SOCKET_ENV: self.control_socket,
            "TEST_DB_USE_TEST_NAME": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.program, section = read_program_section(SUPERVISOR_CONF.read_text())
        program_text = rewrite_program_section(
            section,
            {
                "command": command,
                "directory": str(REPO_ROOT),
                "user": None,
                "autostart": "false",
                "stdout_logfile": str(self.pool_log),
                "environment": supervisor_environment(environment),
            },
        )
        self.conf_path.write_text(
            f"""\
[unix_http_server]
file={self.socket_path}
chmod=0700

[supervisord]
nodaemon=false
logfile={self.supervisord_log}
pidfile={self.supervisord_pidfile}
childlogdir={tmp_path}
loglevel=info
minfds=256
minprocs=64

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{self.socket_path}

{program_text}"""
        )

    def start_supervisord(self) -> None:
        env = dict(os.environ)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        output_path = self.tmp_path / "supervisord.out"
        with open(output_path, "wb") as output:
            # The command returns once supervisord has forked into the background.
            result = subprocess.run(
                [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf_path)],
                env=env,
                cwd=self.tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=SUPERVISORCTL_TIMEOUT,
            )
        assert result.returncode == 0, f"supervisord failed to start:\n{output_path.read_text()}"
        wait_until(
            lambda: self.supervisord_pidfile.exists() and self.socket_path.exists(),
            timeout=EXIT_TIMEOUT,
            message="supervisord's pid file and socket",
        )
        self.supervisord = psutil.Process(int(self.supervisord_pidfile.read_text()))

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf_path), *args],
            capture_output=True,
            text=True,
            timeout=SUPERVISORCTL_TIMEOUT,
        )

    def ctl_ok(self, *args: str) -> str:
        result = self.ctl(*args)
        assert result.returncode == 0, (
            f"supervisorctl {shlex.join(args)} failed:\n{result.stdout}{result.stderr}{self.logs()}"
        )
        return result.stdout

    def state(self) -> str:
        # `status` exits with 3 when the program is not running, but its output names the state.
        fields = self.ctl("status", self.program).stdout.split()
        return fields[1] if len(fields) > 1 else ""

    def master_pid(self) -> int:
        return int(self.ctl_ok("pid", self.program).strip())

    def master(self) -> psutil.Process:
        return psutil.Process(self.master_pid())

    def pool_processes(self) -> list[psutil.Process]:
        return processes_with_env(CONTROL_SOCKET_ENV, self.control_socket)

    def logs(self) -> str:
        parts = []
        for path in (self.pool_log, self.supervisord_log):
            if path.exists():
                parts.append(f"\n--- {path.name} ---\n{path.read_text(errors='replace')}")
        return "".join(parts)

    def wait_until(self, predicate: Callable[[], object], timeout: float, message: str) -> None:
        """Run tests.helpers.wait_until and add the logs at the time of a timeout to its error."""
        try:
            wait_until(predicate, timeout=timeout, message=message)
        except AssertionError as error:
            raise AssertionError(f"{error}{self.logs()}") from None

    def start_pool(self, tasks: Mapping[str, int]) -> psutil.Process:
        """Start the program, wait until gearmand lists every child and return the master."""
        output = self.ctl_ok("start", self.program)
        assert f"{self.program}: started" in output, output
        assert self.state() == "RUNNING", self.logs()
        for task, count in tasks.items():
            self.wait_until(
                lambda task=task, count=count: worker_count(self.server_address, task) == count,
                timeout=POOL_START_TIMEOUT,
                message=f"{count} workers of {task!r}",
            )
        return self.master()

    def wait_until_pool_gone(self, processes: list[psutil.Process]) -> None:
        def gone() -> bool:
            return not self.pool_processes() and not any(is_alive(process) for process in processes)

        self.wait_until(gone, timeout=EXIT_TIMEOUT, message="the pool's processes to exit")

    def shutdown(self) -> None:
        """Stop supervisord and everything it started, and kill what is left after EXIT_TIMEOUT."""
        if self.supervisord is not None and is_alive(self.supervisord):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.ctl("shutdown")
            try:
                self.supervisord.wait(EXIT_TIMEOUT)
            except psutil.TimeoutExpired:
                self.supervisord.kill()
        leftovers = self.pool_processes()
        for process in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(leftovers, timeout=EXIT_TIMEOUT)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.control_socket)


@pytest.fixture
def start_supervisord(tmp_path: Path) -> Iterator[Callable[..., SupervisedPool]]:
    """Start supervisord with the shipped program running ``gearman_pool *pool_args``.

    Call as `start_supervisord(["gearman_pool", ...], server_address)`. supervisord is shut
    down after the test, and any process of the pool still alive then is killed.
    """
    pytest.importorskip("supervisor")
    started: list[SupervisedPool] = []

    def start(pool_args: list[str], server_address: str) -> SupervisedPool:
        supervised = SupervisedPool(tmp_path, pool_args, server_address)
        started.append(supervised)
        supervised.start_supervisord()
        return supervised

    yield start

    for supervised in started:
        supervised.shutdown()


POOL_ARGS = [
    "gearman_pool",
    "--workers",
    "echo=2,sleep=1",
    "--graceful-timeout",
    str(GRACEFUL_TIMEOUT),
]
POOL_TASKS = {"echo": 2, "sleep": 1}


def test_supervisor_conf_stop_settings():
    parser = configparser.RawConfigParser(strict=False)
    parser.read_string(SUPERVISOR_CONF.read_text())
    (section,) = parser.sections()
    program = parser[section]

    assert program["stopsignal"] == "TERM"
    assert int(program["stopwaitsecs"]) > graceful_timeout_of(program["command"])
    assert program["stopasgroup"] == "false"
    assert program["killasgroup"] == "true"
    assert program["numprocs"] == "1"
    assert pidfile_of(program["command"]) == SHIPPED_PID_PATH
    assert program["stdout_logfile"] != SHIPPED_LOG_PATH


@pytest.mark.slow
def test_supervisord_start_job_stop(private_gearmand, start_supervisord):
    supervised = start_supervisord(POOL_ARGS, private_gearmand.address)
    master = supervised.start_pool(POOL_TASKS)
    children_pids = child_pids(master)
    children = [psutil.Process(pid) for pid in children_pids]
    assert len(children) == 3
    pool_pids = {process.pid for process in supervised.pool_processes()}
    assert pool_pids == {master.pid, *children_pids}
    assert supervised.pool_pidfile.read_text().strip() == str(master.pid)

    assert submit_foreground(private_gearmand.address, "echo", b"hello") == b"hello"

    output = supervised.ctl_ok("stop", supervised.program)
    assert f"{supervised.program}: stopped" in output
    assert supervised.state() == "STOPPED"
    supervised.wait_until_pool_gone([master, *children])
    assert not supervised.pool_pidfile.exists()
    assert (
        f"stopped: {supervised.program} (exit status 0)" in supervised.supervisord_log.read_text()
    )
    assert worker_count(private_gearmand.address, "echo") == 0


@pytest.mark.slow
def test_supervisorctl_restart_finishes_job(private_gearmand, start_supervisord):
    address = private_gearmand.address
    supervised = start_supervisord(POOL_ARGS, address)
    old_master = supervised.start_pool(POOL_TASKS)
    old_children = [psutil.Process(pid) for pid in child_pids(old_master)]

    job = ForegroundJob(address, "sleep", SLEEP_JOB_SECONDS)
    job.start()
    wait_until(lambda: running_count(address, "sleep") == 1, message="the sleep job to start")
    output = supervised.ctl_ok("restart", supervised.program)
    job.join(SUPERVISORCTL_TIMEOUT)

    assert f"{supervised.program}: stopped" in output
    assert f"{supervised.program}: started" in output
    assert not job.is_alive()
    assert job.error is None, f"{job.error!r}{supervised.logs()}"
    # The sleep worker returns its pid, so the result names the old child that finished the job.
    assert int(job.result) in {child.pid for child in old_children}
    assert supervised.state() == "RUNNING"
    new_master_pid = supervised.master_pid()
    assert new_master_pid != old_master.pid
    assert not is_alive(old_master)
    assert not any(is_alive(child) for child in old_children)

    for task, count in POOL_TASKS.items():
        wait_until(
            lambda task=task, count=count: worker_count(address, task) == count,
            timeout=POOL_START_TIMEOUT,
        )
    assert submit_foreground(address, "echo", b"after restart") == b"after restart"


@pytest.mark.slow
def test_supervisorctl_signal_hup_reloads(private_gearmand, start_supervisord):
    address = private_gearmand.address
    supervised = start_supervisord(POOL_ARGS, address)
    master = supervised.start_pool(POOL_TASKS)
    old_children = [psutil.Process(pid) for pid in child_pids(master)]

    output = supervised.ctl_ok("signal", "HUP", supervised.program)
    assert f"{supervised.program}: signalled" in output

    # The master stops an old child only after a new child of its task registered.
    supervised.wait_until(
        lambda: not any(is_alive(child) for child in old_children),
        timeout=POOL_START_TIMEOUT,
        message="the old children to exit",
    )
    assert supervised.master_pid() == master.pid
    assert supervised.state() == "RUNNING"
    new_children = child_pids(master)
    assert len(new_children) == 3
    assert not new_children & {child.pid for child in old_children}
    for task, count in POOL_TASKS.items():
        wait_until(lambda task=task, count=count: worker_count(address, task) == count)
    assert submit_foreground(address, "echo", b"after reload") == b"after reload"


@pytest.mark.slow
def test_supervisorctl_stop_keeps_local_gearmand(start_supervisord):
    # With --with-gearmand, gearmand runs in the pool's process group. Only a stop signal
    # sent to the master alone (stopasgroup=false) keeps gearmand serving while the
    # children finish their jobs. The master stops gearmand after the last child.
    address = f"127.0.0.1:{pick_free_port()}"
    pool_args = [
        "gearman_pool",
        "--workers",
        "sleep=1",
        "--graceful-timeout",
        str(GRACEFUL_TIMEOUT),
        "--with-gearmand",
    ]
    supervised = start_supervisord(pool_args, address)
    master = supervised.start_pool({"sleep": 1})
    processes = supervised.pool_processes()
    gearmand = [process for process in processes if process.name() == "gearmand"]
    assert len(gearmand) == 1, processes
    assert len(processes) == 3, "expected the master, one child and gearmand"

    job = ForegroundJob(address, "sleep", LONG_SLEEP_JOB_SECONDS)
    job.start()
    wait_until(lambda: running_count(address, "sleep") == 1, message="the sleep job to start")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        stop = executor.submit(supervised.ctl, "stop", supervised.program)
        supervised.wait_until(
            lambda: any(
                "SIGTERM" in message
                for message in messages_of(
                    supervised.pool_log.read_text(), master.pid, "gearman_pool.pool.master"
                )
            ),
            timeout=SUPERVISORCTL_TIMEOUT,
            message="the master to receive SIGTERM",
        )
        # A gearmand that got SIGTERM from supervisord exited about 0.05 s later in a run
        # with stopasgroup=true, well within this wait.
        time.sleep(GEARMAND_EXIT_WAIT)
        assert is_alive(gearmand[0]), supervised.logs()
        assert running_count(address, "sleep") == 1, "the job should still run"
        stopped = stop.result(timeout=SUPERVISORCTL_TIMEOUT)

    assert f"{supervised.program}: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    job.join(SUPERVISORCTL_TIMEOUT)
    assert not job.is_alive()
    # The master waits a moment after the last child before it stops gearmand, so the
    # child's WORK_COMPLETE reaches the client first.
    assert job.error is None, repr(job.error)
    assert job.result is not None
    supervised.wait_until_pool_gone(processes)


# systemd


def read_unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(text)
    return parser


def test_systemd_unit_settings():
    service = read_unit(SYSTEMD_UNIT.read_text())["Service"]

    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert shlex.split(service["ExecReload"]) == ["/bin/kill", "-HUP", "$MAINPID"]
    assert service["KillMode"] == "mixed"
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > graceful_timeout_of(service["ExecStart"])
    assert pidfile_of(service["ExecStart"]) == SHIPPED_PID_PATH
    assert service["RuntimeDirectory"] == Path(SHIPPED_PID_PATH).parent.name


def test_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify rejects an ExecStart binary that does not exist, so point it at this Python.
    text = SYSTEMD_UNIT.read_text()
    shipped_binary = shlex.split(read_unit(text)["Service"]["ExecStart"])[0]
    unit = tmp_path / SYSTEMD_UNIT.name
    unit.write_text(text.replace(f"ExecStart={shipped_binary} ", f"ExecStart={sys.executable} ", 1))
    assert sys.executable in unit.read_text()

    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert [line for line in output.splitlines() if unit.name in line] == []


def receive_notification(listener: socket.socket, process) -> dict[str, str]:
    try:
        data = listener.recv(4096)
    except TimeoutError:
        raise AssertionError(
            f"no notification within {NOTIFY_TIMEOUT:g} s; pool stderr:\n{process.read_stderr()}"
        ) from None
    return dict(field.split("=", 1) for field in data.decode().split("\n") if field)


def notification_state(fields: dict[str, str]) -> str:
    states = [key for key in ("READY", "RELOADING", "STOPPING") if fields.get(key) == "1"]
    assert len(states) == 1, fields
    return states[0]


@pytest.mark.slow
def test_notify_socket_ready_reload_stop(spawn_manage, private_gearmand):
    address = private_gearmand.address
    socket_path = short_tmp_path("gp-notify", ".sock")
    received = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(socket_path)
        try:
            listener.settimeout(NOTIFY_TIMEOUT)
            pool = spawn_manage(
                "gearman_pool",
                "--workers",
                "echo=2",
                "--graceful-timeout",
                str(GRACEFUL_TIMEOUT),
                env={SERVER_ENV: address, "NOTIFY_SOCKET": socket_path},
            )

            ready = receive_notification(listener, pool)
            received.append(ready)
            assert notification_state(ready) == "READY"
            assert worker_count(address, "echo") == 2
            assert ready["MAINPID"] == str(pool.pid)
            old_children = child_pids(pool)

            before_reload = time.monotonic_ns() // 1000
            os.kill(pool.pid, signal.SIGHUP)
            reloading = receive_notification(listener, pool)
            received.append(reloading)
            assert notification_state(reloading) == "RELOADING"
            assert before_reload <= int(reloading["MONOTONIC_USEC"]) <= time.monotonic_ns() // 1000

            reloaded = receive_notification(listener, pool)
            received.append(reloaded)
            assert notification_state(reloaded) == "READY"
            new_children = child_pids(pool) - old_children
            assert len(new_children) == 2
            wait_until(
                lambda: not child_pids(pool) & old_children, message="the old children to exit"
            )

            os.kill(pool.pid, signal.SIGTERM)
            while notification_state(received[-1]) != "STOPPING":
                received.append(receive_notification(listener, pool))
            assert pool.wait(EXIT_TIMEOUT) == 0
        finally:
            os.unlink(socket_path)

    states = [notification_state(fields) for fields in received]
    # After a reload the master sends READY=1 twice: once it has sent SIGTERM to the last
    # old child, and again once that child was reaped.
    collapsed = [
        state for index, state in enumerate(states) if index == 0 or state != states[index - 1]
    ]
    assert collapsed == ["READY", "RELOADING", "READY", "STOPPING"], received


# Log files: SIGUSR1 and the logrotate snippet


def start_pool_logging_to_file(spawn_manage, tmp_path: Path, server_address: str, *extra_args: str):
    """Start a pool whose LOGGING writes the gearman_pool logger to tmp_path/pool.log."""
    log_path = tmp_path / "pool.log"
    logging_config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "filename": str(log_path),
                "formatter": "plain",
            },
        },
        "loggers": {"gearman_pool": {"handlers": ["file"], "level": "INFO"}},
    }
    settings_text = "from tests.settings import *  # noqa: F403\n\n"
    settings_text += f"LOGGING = {pprint.pformat(logging_config)}\n"
    (tmp_path / "file_log_settings.py").write_text(settings_text)
    pool = spawn_manage(
        "gearman_pool",
        "--workers",
        "echo=2",
        "--graceful-timeout",
        str(GRACEFUL_TIMEOUT),
        *extra_args,
        settings="file_log_settings",
        env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}", SERVER_ENV: server_address},
    )

    def registered() -> bool:
        assert pool.poll() is None, f"the pool exited with {pool.returncode}:\n{pool.read_stderr()}"
        return worker_count(server_address, "echo") == 2

    wait_until(registered, timeout=POOL_START_TIMEOUT, message="2 workers of 'echo'")
    return pool, log_path


def reopened_by_master(log_path: Path, master_pid: int) -> bool:
    if not log_path.exists():
        return False
    messages = messages_of(log_path.read_text(), master_pid, "gearman_pool.pool.master")
    return any("SIGUSR1" in message and "reopened" in message for message in messages)


def open_paths(pid: int) -> set[str]:
    return {file.path for file in psutil.Process(pid).open_files()}


def stop_and_check_child_lines(
    pool, children: set[int], log_path: Path, rotated_path: Path
) -> None:
    """SIGTERM the pool and check that each child's exit line lands in the new log file."""
    os.kill(pool.pid, signal.SIGTERM)
    assert pool.wait(EXIT_TIMEOUT) == 0, pool.read_stderr()
    new_text = log_path.read_text()
    old_text = rotated_path.read_text()
    for pid in children:
        new_messages = messages_of(new_text, pid, "gearman_pool.pool.child")
        assert any("exiting" in message for message in new_messages), new_text
        assert messages_of(old_text, pid, "gearman_pool.pool.child") == [], old_text
    master_messages = messages_of(new_text, pool.pid, "gearman_pool.pool.master")
    assert any("stopped" in message for message in master_messages), new_text


@pytest.mark.slow
def test_sigusr1_reopens_rotated_log(spawn_manage, private_gearmand, tmp_path):
    address = private_gearmand.address
    pool, log_path = start_pool_logging_to_file(spawn_manage, tmp_path, address)
    children = child_pids(pool)
    rotated_path = log_path.with_name("pool.log.1")

    log_path.rename(rotated_path)
    os.kill(pool.pid, signal.SIGUSR1)

    wait_until(
        lambda: reopened_by_master(log_path, pool.pid),
        message="the master's reopened line in the new pool.log",
    )
    # Children reopen their files in their main loop, woken by the forwarded SIGUSR1.
    for pid in children:
        wait_until(
            lambda pid=pid: (
                str(log_path) in open_paths(pid) and str(rotated_path) not in open_paths(pid)
            ),
            message=f"child {pid} to reopen pool.log",
        )
    assert submit_foreground(address, "echo", b"after rotation") == b"after rotation"
    assert messages_of(rotated_path.read_text(), pool.pid, "gearman_pool.pool.master")

    stop_and_check_child_lines(pool, children, log_path, rotated_path)


@pytest.mark.slow
def test_logrotate_snippet_rotates_pool_log(spawn_manage, private_gearmand, tmp_path):
    logrotate = shutil.which("logrotate")
    if logrotate is None:
        pytest.skip("logrotate is not installed")
    address = private_gearmand.address
    pidfile = tmp_path / "pool.pid"
    pool, log_path = start_pool_logging_to_file(
        spawn_manage, tmp_path, address, "--pidfile", str(pidfile)
    )
    children = child_pids(pool)

    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    text = LOGROTATE_CONF.read_text()
    for shipped in (SHIPPED_LOG_PATH, SHIPPED_PID_PATH, "myproject myproject"):
        assert shipped in text
    conf_path = tmp_path / "logrotate.conf"
    conf_path.write_text(
        text.replace(SHIPPED_LOG_PATH, str(log_path))
        .replace(SHIPPED_PID_PATH, str(pidfile))
        .replace("myproject myproject", f"{user} {group}")
    )

    result = subprocess.run(
        [logrotate, "--force", "--state", str(tmp_path / "logrotate.state"), str(conf_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    # delaycompress leaves the newest rotated file uncompressed.
    rotated_path = log_path.with_name("pool.log.1")
    assert rotated_path.exists()
    assert oct(log_path.stat().st_mode & 0o777) == oct(0o640)
    wait_until(
        lambda: reopened_by_master(log_path, pool.pid),
        message="the master's reopened line in the new pool.log",
    )
    for pid in children:
        wait_until(
            lambda pid=pid: str(log_path) in open_paths(pid),
            message=f"child {pid} to reopen pool.log",
        )

    stop_and_check_child_lines(pool, children, log_path, rotated_path)
