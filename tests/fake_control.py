"""A fake pool master control socket for tests of the client and the operator commands.

FakeControlServer listens on a unix socket in the test's tmp_path and serves one
connection at a time. For each connection it takes the next queued action: a reply
object, raw bytes, a reply sent in slow pieces, a hang or an early close. It records
every request line it reads.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from pathlib import Path

# Seconds that the server waits for a request line before it records what it has.
READ_TIMEOUT = 5.0
ACCEPT_POLL_INTERVAL = 0.05
JOIN_TIMEOUT = 5.0


class FakeControlServer:
    """Unix socket server that replays queued actions and records request lines.

    Queue actions with the methods below before the client connects. A connection that
    finds the queue empty gets ``{"ok": false, "error": "no canned reply queued"}``.
    """

    def __init__(self, path: Path):
        self.path = path
        self.requests: list[bytes] = []
        self.connections = 0
        self._actions: deque = deque()
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(8)
        self._listener.settimeout(ACCEPT_POLL_INTERVAL)
        self._thread = threading.Thread(target=self._serve, name="fake-control-server", daemon=True)
        self._thread.start()

    def reply(self, reply: dict) -> None:
        """Queue a reply sent as one JSON line after the request was read."""
        self._actions.append(("raw", (json.dumps(reply) + "\n").encode("utf-8")))

    def raw(self, data: bytes) -> None:
        """Queue bytes sent as they are, followed by closing the connection."""
        self._actions.append(("raw", data))

    def pieces(self, parts: list[bytes], delay: float) -> None:
        """Queue a reply sent as separate writes, ``delay`` seconds apart."""
        self._actions.append(("pieces", (parts, delay)))

    def hang(self) -> None:
        """Queue a connection that reads the request and sends nothing until the server stops."""
        self._actions.append(("hang", None))

    def close_before_read(self) -> None:
        """Queue a connection that is closed as soon as it is accepted."""
        self._actions.append(("close_before_read", None))

    def close_after_read(self) -> None:
        """Queue a connection that is closed after the request was read, without a reply."""
        self._actions.append(("close_after_read", None))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(JOIN_TIMEOUT)
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with connection:
                self._handle(connection)

    def _handle(self, connection: socket.socket) -> None:
        if self._actions:
            kind, argument = self._actions.popleft()
        else:
            kind, argument = "raw", b'{"ok": false, "error": "no canned reply queued"}\n'

        if kind == "close_before_read":
            return
        self.requests.append(self._read_request(connection))

        # The client may already have given up and closed its end.
        with contextlib.suppress(OSError):
            if kind == "raw":
                connection.sendall(argument)
            elif kind == "pieces":
                parts, delay = argument
                for part in parts:
                    connection.sendall(part)
                    if self._stop.wait(delay):
                        return
            elif kind == "hang":
                self._stop.wait()
            # "close_after_read" sends nothing: the connection closes when this returns.

    def _read_request(self, connection: socket.socket) -> bytes:
        """Read up to and including the first newline, or what arrived before EOF or a timeout."""
        data = b""
        connection.settimeout(READ_TIMEOUT)
        deadline = time.monotonic() + READ_TIMEOUT
        while b"\n" not in data and time.monotonic() < deadline:
            try:
                chunk = connection.recv(4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        return data
