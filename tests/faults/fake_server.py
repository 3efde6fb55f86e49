"""A fake Gearman server on 127.0.0.1 and a free port that sends scripted bytes.

Each accepted connection runs the server's current ``script`` in a thread of its own. A
script gets a ScriptedConnection and decides what to send, when, and whether to close.
The tests use it to feed GearmanClient, GearmanWorker and AdminClient hostile replies.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable

from gearman_pool.address import ServerAddress
from gearman_pool.protocol import REQUEST_MAGIC, PacketDecoder, PacketType, encode_response

# Seconds between checks of the stop flag while a script waits.
POLL_INTERVAL = 0.05


class ScriptedConnection:
    """An accepted connection, with the reads and writes that scripts use."""

    def __init__(self, sock: socket.socket, stopped: threading.Event):
        # Non-blocking, so that no send or receive can outlast a stop of the server.
        sock.setblocking(False)
        self.sock = sock
        self.stopped = stopped
        self.received = bytearray()

    @property
    def open(self) -> bool:
        return not self.stopped.is_set() and self.sock.fileno() >= 0

    def read_available(self, timeout: float = 0.0) -> bool:
        """Read what the peer sent within ``timeout`` seconds; return False once it closed."""
        readable, _, _ = select.select([self.sock], [], [], timeout)
        if not readable:
            return True
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        self.received += data
        return True

    def wait_for(self, needle: bytes, timeout: float = 5.0) -> bool:
        """Read until ``needle`` arrived; return False on timeout or when the peer closed."""
        deadline = time.monotonic() + timeout
        while needle not in self.received:
            if not self.open or time.monotonic() > deadline:
                return False
            if not self.read_available(POLL_INTERVAL):
                return False
        return True

    def send(self, data: bytes) -> bool:
        """Send all of ``data``; return False when the peer is gone or the server stopped."""
        view = memoryview(data)
        while view:
            if self.stopped.is_set():
                return False
            _, writable, _ = select.select([], [self.sock], [], POLL_INTERVAL)
            if not writable:
                continue
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                continue
            except OSError:
                return False
            view = view[sent:]
        return True

    def trickle(self, data: bytes, interval: float) -> None:
        """Send ``data`` one byte at a time, ``interval`` seconds apart, until the peer closes."""
        for index in range(len(data)):
            if not self.open or not self.send(data[index : index + 1]):
                return
            deadline = time.monotonic() + interval
            while time.monotonic() < deadline:
                if not self.open or not self.read_available(POLL_INTERVAL):
                    return

    def flood(self, chunk: bytes) -> None:
        """Send ``chunk`` over and over until the peer closes or the server stops."""
        while self.open and self.send(chunk):
            pass

    def hold(self) -> None:
        """Keep the connection open, sending nothing, until the peer closes or the server stops."""
        while self.open and self.read_available(POLL_INTERVAL):
            pass


Script = Callable[[ScriptedConnection], None]


def send_and_close(data: bytes) -> Script:
    def script(connection: ScriptedConnection) -> None:
        connection.read_available(0.05)
        connection.send(data)

    return script


def send_and_hold(data: bytes) -> Script:
    def script(connection: ScriptedConnection) -> None:
        connection.read_available(0.05)
        connection.send(data)
        connection.hold()

    return script


def confirm_registration(connection: ScriptedConnection, timeout: float = 5.0) -> bool:
    """Reply to the worker's first ECHO_REQ as gearmand does; return False if none came.

    A worker sends ECHO_REQ after its CAN_DO packets and waits for the reply before it
    requests a job, so a script that tests the job path must send this reply first.
    """
    deadline = time.monotonic() + timeout
    while True:
        for packet in PacketDecoder(magic=REQUEST_MAGIC).feed(bytes(connection.received)):
            if packet.type == PacketType.ECHO_REQ:
                return connection.send(encode_response(PacketType.ECHO_RES, *packet.args))
        if not connection.open or time.monotonic() > deadline:
            return False
        if not connection.read_available(POLL_INTERVAL):
            return False


def confirm_then(script: Script) -> Script:
    """Run ``script`` after replying to the worker's registration ECHO_REQ."""

    def confirmed(connection: ScriptedConnection) -> None:
        if confirm_registration(connection):
            script(connection)

    return confirmed


class FakeServer:
    """A TCP server on 127.0.0.1 and a port chosen by the kernel, serving until ``close()``."""

    def __init__(self, script: Script):
        self.script = script
        self.connections: list[ScriptedConnection] = []
        self._stopped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL_INTERVAL)
        self.address = ServerAddress("127.0.0.1", self._listener.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(
            target=self._accept_loop, daemon=True, name="fake-gearmand"
        )
        self._acceptor.start()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection = ScriptedConnection(sock, self._stopped)
            self.connections.append(connection)
            thread = threading.Thread(
                target=self._serve, args=(connection, self.script), daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: ScriptedConnection, script: Script) -> None:
        try:
            script(connection)
        finally:
            connection.sock.close()

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)
