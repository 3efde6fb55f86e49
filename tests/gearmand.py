"""Run a private gearmand for the tests.

GearmandProcess starts Debian's gearmand (package gearman-job-server, tested with 1.1.20) as a
foreground child process that listens on 127.0.0.1 and a free port. It never uses 4730, the
standard Gearman port, which a system gearmand may own.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

INSTALL_HINT = "install Debian's gearman-job-server (`apt-get install gearman-job-server`)"

HOST = "127.0.0.1"
STANDARD_GEARMAN_PORT = 4730

# /usr/sbin is not on PATH for every user, but that is where Debian installs gearmand.
SEARCH_DIRS = ("/usr/sbin", "/usr/local/sbin")

READY_TIMEOUT = 10.0
READY_POLL_INTERVAL = 0.01
# Timeout for each connect and getpid request of the readiness check.
PROBE_TIMEOUT = 0.5
STOP_TIMEOUT = 5.0
LOG_TAIL_BYTES = 4000


class GearmandError(RuntimeError):
    """gearmand could not be found or started."""


class PortTakenError(GearmandError):
    """Another process listens on the port that gearmand was started on."""


def find_gearmand() -> str:
    """Return the path of the gearmand binary, or raise GearmandError if it is not installed."""
    search_path = os.pathsep.join([os.environ.get("PATH", os.defpath), *SEARCH_DIRS])
    path = shutil.which("gearmand", path=search_path)
    if path is None:
        raise GearmandError(
            f"gearmand not found on PATH or in {', '.join(SEARCH_DIRS)}: {INSTALL_HINT}"
        )
    return path


def pick_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free when checked, never 4730.

    Another process can take the port before gearmand binds it, so the caller must still
    check which process replies on it.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port != STANDARD_GEARMAN_PORT:
            return port


def port_is_free(host: str, port: int) -> bool:
    """Return whether a listening socket could bind host:port now (SO_REUSEADDR, like gearmand)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def request_getpid(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> int | None:
    """Send the admin command `getpid` and return the server's pid.

    Returns None if nothing accepts the connection or the reply is not `OK <pid>`.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"getpid\n")
            reply = b""
            while not reply.endswith(b"\n") and len(reply) < 100:
                chunk = sock.recv(100)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return None

    parts = reply.split()
    if len(parts) != 2 or parts[0] != b"OK" or not parts[1].isdigit():
        return None
    return int(parts[1])


class GearmandProcess:
    """A gearmand child process on 127.0.0.1 and a port chosen in Python.

    gearmand 1.1.20 cannot report the port it got from `--port=0` (it logs port 0), so the port
    is picked here. When the port is already taken, gearmand retries bind() for about 20 seconds
    instead of exiting. start() therefore waits until the process that replies to `getpid` on the
    port is this child. Each start() gets a new temporary directory for the pid file and the log,
    and stop() removes it.
    """

    def __init__(self, extra_args: list[str] | tuple[str, ...] = (), port: int | None = None):
        """Locate gearmand. extra_args are appended to its command line, e.g. `--job-retries=1`."""
        if port == STANDARD_GEARMAN_PORT:
            raise ValueError(
                f"port {port} is the standard Gearman port, which a system gearmand may own"
            )
        self.binary = find_gearmand()
        self.host = HOST
        self.port: int | None = port
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self.tmp_dir: str | None = None

    @property
    def address(self) -> str:
        """Server address in the "host:port" form of GEARMAN_SERVERS."""
        if self.port is None:
            raise GearmandError("gearmand has no port yet: call start() first")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running gearmand, or None when it is not running."""
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    @property
    def log_path(self) -> str | None:
        """Path of gearmand's log file for the current run, or None when stopped."""
        if self.tmp_dir is None:
            return None
        return os.path.join(self.tmp_dir, "gearmand.log")

    def start(self) -> GearmandProcess:
        """Start gearmand and wait until it replies to `getpid` on its port.

        Without a fixed port, a port taken by another process between the check and gearmand's
        bind() is retried with a new port, up to three times. Raises GearmandError if gearmand
        exits or does not reply within 10 seconds.
        """
        if self.process is not None:
            raise GearmandError(f"gearmand is already running on {self.address}")

        attempts_left = 1 if self.port is not None else 3
        while True:
            port = self.port if self.port is not None else pick_free_port()
            try:
                self._start_on_port(port)
            except PortTakenError:
                attempts_left -= 1
                if attempts_left == 0:
                    raise
                continue
            self.port = port
            return self

    def stop(self) -> None:
        """Stop gearmand: SIGTERM, then SIGKILL after 5 seconds. Always reaps it.

        The temporary directory is removed, and the port is kept for a later start().
        """
        process, self.process = self.process, None
        try:
            if process is not None:
                _terminate_and_reap(process)
        finally:
            if self.tmp_dir is not None:
                shutil.rmtree(self.tmp_dir, ignore_errors=True)
                self.tmp_dir = None

    def restart(self) -> GearmandProcess:
        """Stop gearmand and start it again on the same port, with an empty queue."""
        self.stop()
        return self.start()

    def __enter__(self) -> GearmandProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.pid is not None else "stopped"
        return f"<GearmandProcess {self.host}:{self.port} {state}>"

    def _start_on_port(self, port: int) -> None:
        # A listening socket on the port would keep gearmand in its bind() retry loop until the
        # readiness timeout, so fail fast when it can be seen before the start.
        if not port_is_free(self.host, port):
            raise PortTakenError(f"port {self.host}:{port} is already in use")

        self.tmp_dir = tempfile.mkdtemp(prefix="gearmand-test-")
        # An empty config file keeps a system-wide /etc/gearmand.conf out of the tests.
        config_path = os.path.join(self.tmp_dir, "gearmand.conf")
        pathlib.Path(config_path).touch()
        output_path = os.path.join(self.tmp_dir, "gearmand.out")

        command = [
            self.binary,
            f"--listen={self.host}",
            f"--port={port}",
            "--threads=1",
            f"--pid-file={os.path.join(self.tmp_dir, 'gearmand.pid')}",
            f"--log-file={self.log_path}",
            "--verbose=WARNING",
            f"--config-file={config_path}",
            *self.extra_args,
        ]
        with open(output_path, "wb") as output:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )

        try:
            self._wait_until_ready(port, output_path)
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self, port: int, output_path: str) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            returncode = self.process.poll()
            if returncode is not None:
                raise GearmandError(
                    f"gearmand exited with code {returncode} before it listened on "
                    f"{self.host}:{port}\n{self._read_diagnostics(output_path)}"
                )

            answering_pid = request_getpid(self.host, port)
            if answering_pid == self.process.pid:
                return
            if answering_pid is not None:
                raise PortTakenError(
                    f"port {self.host}:{port} is taken by another gearmand (pid {answering_pid})"
                )

            if time.monotonic() > deadline:
                raise PortTakenError(
                    f"gearmand (pid {self.process.pid}) did not reply to getpid on "
                    f"{self.host}:{port} within {READY_TIMEOUT:g} seconds; another program may "
                    f"hold the port\n"
                    f"{self._read_diagnostics(output_path)}"
                )
            time.sleep(READY_POLL_INTERVAL)

    def _read_diagnostics(self, output_path: str) -> str:
        sections = []
        for title, path in (("log file", self.log_path), ("stdout and stderr", output_path)):
            tail = _read_tail(path) if path else ""
            sections.append(f"--- gearmand {title} (tail) ---\n{tail or '(empty)'}")
        return "\n".join(sections)


def _terminate_and_reap(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    except BaseException:
        # An interrupt (e.g. KeyboardInterrupt) during the wait must not leave a zombie.
        process.kill()
        process.wait()
        raise


def _read_tail(path: str) -> str:
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - LOG_TAIL_BYTES))
            return file.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
