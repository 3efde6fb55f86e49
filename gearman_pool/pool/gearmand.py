"""A local gearmand run by the pool master (`gearman_pool --with-gearmand`).

The master starts Debian's gearmand on the first GEARMAN_SERVERS address, reaps and
restarts it when it dies, and stops it last, after every worker has exited.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import signal
import socket
import tempfile
import time

from gearman_pool.pool.reload import GEARMAND_PID_ENV

__all__ = ["GEARMAND_PID_ENV", "GearmandError", "LocalGearmand", "find_gearmand"]

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT = 10.0
RESTART_DELAY = 1.0
STOP_TIMEOUT = 5.0
INSTALL_HINT = "install Debian's gearman-job-server (apt-get install gearman-job-server)"


class GearmandError(RuntimeError):
    """gearmand cannot be found, or cannot run on the configured address."""


def find_gearmand() -> str:
    path = shutil.which("gearmand") or ("/usr/sbin/gearmand" if os.access("/usr/sbin/gearmand", os.X_OK) else None)
    if path is None:
        raise GearmandError(f"--with-gearmand: the gearmand program was not found; {INSTALL_HINT}")
    return path


def is_local_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def request_pid(host: str, port: int, timeout: float = 0.5) -> int | None:
    """Return the pid that gearmand on host:port reports (admin `getpid`), or None."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"getpid\n")
            reply = sock.recv(64)
    except OSError:
        return None
    text = reply.decode("ascii", "replace").strip()
    return int(text[3:]) if text.startswith("OK ") and text[3:].isdigit() else None


class LocalGearmand:
    def __init__(self, address, extra_args=(), log_file: str | None = None):
        if not is_local_host(address.host):
            raise GearmandError(
                f"--with-gearmand runs gearmand on this host, but the first GEARMAN_SERVERS entry is {address}; "
                "name a loopback address such as 127.0.0.1:4730 first"
            )
        self.address = address
        self.binary = find_gearmand()
        self.extra_args = list(extra_args)
        self.directory = tempfile.mkdtemp(prefix="gearman_pool-gearmand-")
        # "stderr" makes gearmand write its log to the master's stderr, next to the pool's.
        self.log_file = log_file or "stderr"
        self.pid: int | None = None
        self.started_at = 0.0
        self.restart_at: float | None = None
        self.stop_sent_at: float | None = None

    def adopt(self, pid: int) -> bool:
        """Take over a gearmand that a previous master image started (after a reload)."""
        if request_pid(self.address.host, self.address.port) != pid:
            return False
        self.pid = pid
        self.started_at = time.monotonic()
        return True

    def start(self, wait: bool = True) -> None:
        if request_pid(self.address.host, self.address.port) is not None or not self._port_is_free():
            raise GearmandError(
                f"--with-gearmand: {self.address} is already in use (another gearmand?); stop it, or drop "
                "--with-gearmand to use it"
            )
        argv = [
            self.binary,
            f"--listen={self.address.host}",
            f"--port={self.address.port}",
            f"--pid-file={os.path.join(self.directory, 'gearmand.pid')}",
            f"--log-file={self.log_file}",
            "--verbose=WARNING",
            *self.extra_args,
        ]
        null = os.open(os.devnull, os.O_RDWR)
        try:
            actions = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1)]
            self.pid = os.posix_spawn(self.binary, argv, dict(os.environ), file_actions=actions, setsigmask=set())
        finally:
            os.close(null)
        self.started_at = time.monotonic()
        self.restart_at = None
        logger.info("Started gearmand %s on %s (log %s)", self.pid, self.address, self.log_file)
        if wait:
            self.wait_until_ready()

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if request_pid(self.address.host, self.address.port) == self.pid:
                return
            finished, status = os.waitpid(self.pid, os.WNOHANG)
            if finished:
                self.pid = None
                raise GearmandError(
                    f"gearmand exited with status {os.waitstatus_to_exitcode(status)} while starting on "
                    f"{self.address}; see {self.log_file}"
                )
            time.sleep(0.02)
        raise GearmandError(
            f"gearmand on {self.address} did not respond to getpid within {STARTUP_TIMEOUT:g} s; see {self.log_file}"
        )

    def _port_is_free(self) -> bool:
        family = socket.AF_INET6 if ":" in self.address.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.address.host, self.address.port))
            except OSError:
                return False
        return True

    def exited(self, description: str, stopping: bool) -> None:
        """Record that the master reaped gearmand; schedule a restart unless stopping."""
        pid, self.pid = self.pid, None
        if stopping:
            logger.info("gearmand %s %s", pid, description)
            return
        self.restart_at = time.monotonic() + RESTART_DELAY
        logger.error("gearmand %s %s; restarting it in %g s (log %s)", pid, description, RESTART_DELAY, self.log_file)

    def restart_if_due(self) -> None:
        if self.pid is None and self.restart_at is not None and time.monotonic() >= self.restart_at:
            try:
                self.start(wait=False)
            except (GearmandError, OSError) as exc:
                self.restart_at = time.monotonic() + RESTART_DELAY
                logger.error("Cannot restart gearmand: %s; retrying in %g s", exc, RESTART_DELAY)

    def stop(self) -> None:
        if self.pid is not None and self.stop_sent_at is None:
            self.stop_sent_at = time.monotonic()
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def kill_if_stuck(self) -> None:
        if self.pid is not None and self.stop_sent_at is not None and time.monotonic() - self.stop_sent_at > STOP_TIMEOUT:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
