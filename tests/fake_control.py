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


# A pool in the middle of a reload: data_import has three current children and one child
# of the previous generation that still finishes its job. send_invoices failed to start.
STATUS_REPLY = {
    "ok": True,
    "master": {
        "pid": 4100,
        "started_at": 1733300000.0,
        "uptime": 7260.0,
        "stopping": False,
        "reloading": True,
        "servers": ["127.0.0.1:4730", "127.0.0.1:4731"],
    },
    "tasks": [
        {
            "task": "send_invoices",
            "configured": 2,
            "children": 0,
            "busy": 0,
            "failed": True,
            "boot_failures": 5,
            "restarts": 5,
        },
        {
            "task": "data_import",
            "configured": 3,
            "children": 3,
            "busy": 1,
            "failed": False,
            "boot_failures": 0,
            "restarts": 2,
        },
    ],
    "children": [
        {
            "task": "data_import",
            "slot": 2,
            "pid": 4112,
            "generation": "current",
            "state": "ready",
            "job_handle": None,
            "job_seconds": None,
            "jobs_done": 9,
            "memory_uss": None,
            "age": 45.0,
            "slot_restarts": 1,
        },
        {
            "task": "data_import",
            "slot": 1,
            "pid": 3990,
            "generation": "previous",
            "state": "stopping",
            "job_handle": "H:worker-host:9",
            "job_seconds": 125.0,
            "jobs_done": 31,
            "memory_uss": 20971520,
            "age": 7200.0,
            "slot_restarts": 0,
        },
        {
            "task": "data_import",
            "slot": 3,
            "pid": 4113,
            "generation": "current",
            "state": "starting",
            "job_handle": None,
            "job_seconds": None,
            "jobs_done": 0,
            "memory_uss": 1048576,
            "age": 0.4,
            "slot_restarts": 0,
        },
        {
            "task": "data_import",
            "slot": 1,
            "pid": 4111,
            "generation": "current",
            "state": "busy",
            "job_handle": "H:worker-host:12",
            "job_seconds": 3.24,
            "jobs_done": 17,
            "memory_uss": 12345678,
            "age": 80.1,
            "slot_restarts": 0,
        },
    ],
    "totals": {"children": 4, "busy": 1, "jobs_done": 57, "memory_uss": 34365774},
}
