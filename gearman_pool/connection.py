"""One TCP connection to a Gearman job server, for binary packets or admin text lines.

Waits use poll(), so descriptor numbers above 1024 work, and every wait has a timeout.
Python creates sockets non-inheritable (close-on-exec), so an exec'd program never
inherits them.
"""

from __future__ import annotations

import collections
import errno
import select
import socket
import time

from gearman_pool.address import ServerAddress
from gearman_pool.errors import ProtocolError, ServerUnavailable
from gearman_pool.protocol import Packet, PacketDecoder, PacketType, encode_request

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_IO_TIMEOUT = 10.0
RECV_SIZE = 256 * 1024
# An admin reply line longer than this is corrupt input, not a task list.
MAX_LINE_LENGTH = 1024 * 1024

POLL_IN = select.POLLIN | select.POLLPRI
POLL_ERROR = select.POLLERR | select.POLLHUP | select.POLLNVAL


def wait_readable(fds, timeout):
    """Poll ``fds`` and return the subset that is readable or closed, [] on timeout.

    ``timeout`` is in seconds; None waits forever. An EINTR is retried by Python itself
    (PEP 475), so a signal handler that needs to end the wait must write to a file
    descriptor in ``fds`` (signal.set_wakeup_fd does that).
    """
    poller = select.poll()
    for fd in fds:
        poller.register(fd, POLL_IN | POLL_ERROR)
    milliseconds = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    return [fd for fd, _event in poller.poll(milliseconds)]


class Connection:
    """A binary-protocol connection to one server.

    Not thread-safe. After any ServerUnavailable or ProtocolError the connection is
    closed, and ``connect()`` must be called again before the next request.
    """

    def __init__(
        self,
        address: ServerAddress,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        io_timeout: float = DEFAULT_IO_TIMEOUT,
    ):
        self.address = address
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self._socket: socket.socket | None = None
        self._decoder = PacketDecoder()
        self._packets: collections.deque[Packet] = collections.deque()

    def __repr__(self):
        state = "connected" if self.connected else "closed"
        return f"<{type(self).__name__} {self.address} {state}>"

    @property
    def connected(self) -> bool:
        return self._socket is not None

    def fileno(self) -> int:
        if self._socket is None:
            raise ServerUnavailable(f"connection to {self.address} is closed")
        return self._socket.fileno()

    def connect(self) -> None:
        if self._socket is not None:
            return
        try:
            sock = socket.create_connection(
                (self.address.host, self.address.port), timeout=self.connect_timeout
            )
        except OSError as exc:
            raise ServerUnavailable(f"cannot connect to Gearman server {self.address}: {_describe(exc)}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.io_timeout)
        self._socket = sock
        self._decoder = PacketDecoder()
        self._packets.clear()

    def close(self) -> None:
        sock, self._socket = self._socket, None
        self._packets.clear()
        if sock is not None:
            sock.close()

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def send_packet(self, packet_type: PacketType, *args: bytes) -> None:
        self.send_bytes(encode_request(packet_type, *args))

    def send_bytes(self, data: bytes) -> None:
        if self._socket is None:
            self.connect()
        try:
            self._socket.sendall(data)
        except OSError as exc:
            self.close()
            raise ServerUnavailable(f"sending to Gearman server {self.address} failed: {_describe(exc)}") from exc

    def has_buffered_packet(self) -> bool:
        return bool(self._packets)

    def receive(self) -> list[Packet]:
        """Read what the socket has now and return the packets it completes.

        Call it when poll() reports the socket readable. Raises ServerUnavailable when the
        server closed the connection.
        """
        self._packets.extend(self._feed(self._recv()))
        packets = list(self._packets)
        self._packets.clear()
        return packets

    def read_packet(self, timeout: float | None = None, wakeup_fd: int | None = None) -> Packet | None:
        """Wait for the next packet for up to ``timeout`` seconds.

        Returns None when ``wakeup_fd`` became readable first. Raises TimeoutError when
        the time ran out; the connection stays usable after that.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._packets:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"no reply from Gearman server {self.address} within {timeout:g} s")
            fds = [self.fileno()] if wakeup_fd is None else [self.fileno(), wakeup_fd]
            ready = wait_readable(fds, remaining)
            if wakeup_fd is not None and wakeup_fd in ready:
                return None
            if ready:
                self._packets.extend(self._feed(self._recv()))
        return self._packets.popleft()

    def _feed(self, data: bytes) -> list[Packet]:
        try:
            return self._decoder.feed(data)
        except ProtocolError as exc:
            self.close()
            raise ProtocolError(f"{exc} (from Gearman server {self.address})") from None

    def _recv(self) -> bytes:
        if self._socket is None:
            raise ServerUnavailable(f"connection to Gearman server {self.address} is closed")
        try:
            data = self._socket.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:
            self.close()
            raise ServerUnavailable(f"reading from Gearman server {self.address} failed: {_describe(exc)}") from exc
        if not data:
            self.close()
            raise ServerUnavailable(f"Gearman server {self.address} closed the connection")
        return data


class AdminConnection(Connection):
    """A connection speaking gearmand's line-based admin text protocol."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._line_buffer = bytearray()

    def connect(self) -> None:
        super().connect()
        self._line_buffer = bytearray()

    def send_line(self, line: bytes) -> None:
        if b"\n" in line or b"\r" in line:
            raise ValueError(f"admin command {line!r} contains a line break")
        self.send_bytes(line + b"\n")

    def read_line(self, timeout: float | None = None) -> bytes:
        """Return the next reply line without its LF or CRLF ending.

        gearmand 1.1.20 ends most replies with LF but `maxqueue`, `cancel job` and every
        ERR reply with CRLF, so both are accepted.
        """
        timeout = self.io_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            end = self._line_buffer.find(b"\n")
            if end != -1:
                line = bytes(self._line_buffer[:end])
                del self._line_buffer[: end + 1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self._line_buffer) > MAX_LINE_LENGTH:
                self.close()
                raise ProtocolError(
                    f"admin reply line from Gearman server {self.address} exceeds {MAX_LINE_LENGTH} bytes"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not wait_readable([self.fileno()], remaining):
                self.close()
                raise TimeoutError(f"no admin reply from Gearman server {self.address} within {timeout:g} s")
            self._line_buffer += self._recv()


def _describe(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if exc.errno == errno.ECONNREFUSED:
        return "connection refused (is gearmand running there?)"
    return exc.strerror or str(exc)
