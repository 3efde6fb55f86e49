"""The master's control socket: status and per-task scaling for operators.

A client connects to the unix socket, sends one JSON request line and reads one JSON
reply line, and then the master closes the connection. Sockets are non-blocking and
served from the main loop's poll(). Only sending a reply can hold the master, for at
most one second per client, and a client that sends no request is dropped after
CLIENT_TIMEOUT seconds.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import time

logger = logging.getLogger(__name__)

MAX_REQUEST_SIZE = 64 * 1024
# A client that has not sent its request line within this many seconds is dropped.
CLIENT_TIMEOUT = 5.0


class ControlSocketError(RuntimeError):
    """The control socket cannot be created, or another pool is listening on it."""


class ControlServer:
    def __init__(self, path: str, handle_request, listen_fd: int | None = None):
        """Listen on ``path``, or adopt the already listening ``listen_fd`` after a reload.

        ``handle_request(dict) -> dict`` builds the reply of one request.
        """
        self.path = path
        self.handle_request = handle_request
        self.clients: dict[int, _Client] = {}
        if listen_fd is not None:
            self.listener = socket.socket(fileno=listen_fd)
            self.listener.set_inheritable(False)
        else:
            self.listener = self._bind(path)
        self.listener.setblocking(False)

    @staticmethod
    def _bind(path: str) -> socket.socket:
        if os.path.exists(path):
            if not stat.S_ISSOCK(os.stat(path).st_mode):
                raise ControlSocketError(f"control socket path {path} exists and is not a socket; choose another path")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.settimeout(1.0)
                probe.connect(path)
            except OSError:
                # No process listens: a socket file left by a pool that was killed.
                os.unlink(path)
            else:
                raise ControlSocketError(
                    f"another gearman_pool is listening on control socket {path}; stop it, or pass "
                    "--control-socket with another path"
                )
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            os.chmod(path, 0o600)
            listener.listen(16)
        except OSError as exc:
            listener.close()
            raise ControlSocketError(f"cannot listen on control socket {path}: {exc.strerror or exc}") from None
        return listener

    def fileno(self) -> int:
        return self.listener.fileno()

    def client_fds(self) -> list[int]:
        return list(self.clients)

    def accept(self) -> None:
        while True:
            try:
                connection, _address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("Control socket %s: accept failed: %s (pid %s)", self.path, exc, os.getpid())
                return
            connection.setblocking(False)
            self.clients[connection.fileno()] = _Client(connection, time.monotonic())

    def serve(self, fd: int) -> None:
        client = self.clients.get(fd)
        if client is None:
            return
        try:
            data = client.connection.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(fd)
            return
        client.buffer += data
        if b"\n" not in client.buffer:
            if len(client.buffer) > MAX_REQUEST_SIZE:
                self._reply(fd, {"ok": False, "error": f"request longer than {MAX_REQUEST_SIZE} bytes"})
            return
        line = client.buffer.split(b"\n", 1)[0]
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError:
            self._reply(fd, {"ok": False, "error": f"invalid request {line[:200]!r}: send one JSON object per line"})
            return
        try:
            reply = self.handle_request(request)
        except Exception:
            logger.exception("Control request %r failed (pid %s)", request, os.getpid())
            reply = {"ok": False, "error": "the master failed to handle the request; see its log"}
        self._reply(fd, reply)

    def drop_stale_clients(self) -> None:
        now = time.monotonic()
        for fd, client in list(self.clients.items()):
            if now - client.connected_at > CLIENT_TIMEOUT:
                self._drop(fd)

    def _reply(self, fd: int, reply: dict) -> None:
        client = self.clients[fd]
        data = (json.dumps(reply) + "\n").encode()
        # The reply is small and the client waits for it. A blocking send with a short
        # timeout keeps a stalled client from holding the master for long.
        client.connection.settimeout(1.0)
        try:
            client.connection.sendall(data)
        except OSError as exc:
            logger.debug("Control reply could not be sent: %s (pid %s)", exc, os.getpid())
        self._drop(fd)

    def _drop(self, fd: int) -> None:
        client = self.clients.pop(fd, None)
        if client is not None:
            client.connection.close()

    def detach_for_exec(self) -> int:
        """Close the client connections and return the listening fd, inheritable."""
        for fd in list(self.clients):
            self._drop(fd)
        self.listener.set_inheritable(True)
        return self.listener.fileno()

    def close(self, remove: bool = True) -> None:
        for fd in list(self.clients):
            self._drop(fd)
        self.listener.close()
        if remove:
            try:
                os.unlink(self.path)
            except OSError:
                pass


class _Client:
    def __init__(self, connection: socket.socket, connected_at: float):
        self.connection = connection
        self.connected_at = connected_at
        self.buffer = b""
