"""Gearman client: submits jobs and, in the foreground, waits for their results."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
import uuid
import zlib

from gearman_pool.address import ServerAddress
from gearman_pool.connection import DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT, Connection
from gearman_pool.errors import (
    JobFailed,
    JobTimeout,
    ProtocolError,
    QueueFull,
    ServerError,
    ServerUnavailable,
)
from gearman_pool.protocol import PRIORITIES, SUBMIT_TYPES, PacketType

logger = logging.getLogger(__name__)



@dataclasses.dataclass
class JobResult:
    """Outcome of a submit: the job handle and, for a foreground job, its result."""

    handle: str
    server: ServerAddress
    unique: str
    background: bool
    result: bytes | None = None
    data_chunks: list[bytes] = dataclasses.field(default_factory=list)
    warnings: list[bytes] = dataclasses.field(default_factory=list)
    status: tuple[int, int] | None = None


class GearmanClient:
    """Submits jobs to one of several servers, failing over to the next one.

    Each server keeps one connection. A connection found dead (gearmand restarted) is
    reopened once for the same request before the next server is tried. A timed-out
    foreground job closes its connection, so a late result can never be mistaken for the
    reply to a later request. Not thread-safe: use one client per thread.
    """

    def __init__(
        self,
        servers: list[ServerAddress],
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        io_timeout: float = DEFAULT_IO_TIMEOUT,
    ):
        if not servers:
            raise ValueError("GearmanClient needs at least one server address")
        self.servers = list(servers)
        self._connections = {
            address: Connection(address, connect_timeout=connect_timeout, io_timeout=io_timeout)
            for address in self.servers
        }
        self._exceptions_enabled: set[ServerAddress] = set()
        self._round_robin = itertools.count()

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._exceptions_enabled.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def submit_job(
        self,
        task: bytes,
        data: bytes = b"",
        *,
        background: bool = True,
        priority: str = "normal",
        unique: bytes | None = None,
        timeout: float | None = None,
    ) -> JobResult:
        """Submit a job and return its handle, and its result when ``background`` is False.

        ``timeout`` (seconds) bounds the wait for a foreground result; None waits as long
        as the job runs. Raises JobFailed, JobTimeout, QueueFull, ServerError,
        ProtocolError (the server sent bytes that are not Gearman protocol) or
        ServerUnavailable (every server was tried).
        """
        if timeout is not None and not 0 <= timeout < float("inf"):
            raise ValueError(f"invalid timeout {timeout!r}: give a finite number of seconds, or None to wait as long as the job runs")
        if priority not in PRIORITIES:
            raise ValueError(f"invalid priority {priority!r}: use one of {', '.join(PRIORITIES)}")
        if not isinstance(task, bytes) or not task or b"\x00" in task:
            raise ValueError(f"invalid task name {task!r}: expected non-empty bytes without NUL")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"job data must be bytes, got {type(data).__name__}")
        chosen_unique = unique or None
        if unique is None:
            unique = uuid.uuid4().hex.encode()
        elif b"\x00" in unique:
            raise ValueError(f"invalid unique key {unique!r}: it contains a NUL byte")
        packet_type = SUBMIT_TYPES[(priority, background)]

        errors = []
        for address in self._server_order(chosen_unique):
            try:
                handle = self._create_job(address, packet_type, task, unique, bytes(data))
            except ServerUnavailable as exc:
                errors.append(str(exc))
                continue
            result = JobResult(
                handle=handle.decode("utf-8", "replace"),
                server=address,
                unique=unique.decode("utf-8", "replace"),
                background=background,
            )
            if not background:
                self._wait_for_result(address, task, handle, result, timeout)
            return result
        raise ServerUnavailable("; ".join(errors))

    def echo(self, payload: bytes = b"ping", address: ServerAddress | None = None) -> float:
        """Send ECHO_REQ to a server and return the round trip in seconds."""
        connection = self._connections[address or self.servers[0]]
        started = time.monotonic()
        reply = self._request(connection, PacketType.ECHO_REQ, (payload,), {PacketType.ECHO_RES})
        if reply.args[0] != payload:
            connection.close()
            raise ProtocolError(f"ECHO_RES from {connection.address} returned {reply.args[0]!r}, sent {payload!r}")
        return time.monotonic() - started

    def _server_order(self, key: bytes | None) -> list[ServerAddress]:
        # A caller-chosen unique key always goes to the same server first, so gearmand can
        # coalesce duplicates; other jobs spread over the servers in turn.
        count = len(self.servers)
        start = zlib.crc32(key) % count if key else next(self._round_robin) % count
        return self.servers[start:] + self.servers[:start]

    def _create_job(self, address, packet_type, task, unique, data) -> bytes:
        connection = self._connections[address]
        was_connected = connection.connected
        try:
            return self._send_submit(connection, packet_type, task, unique, data)
        except ServerUnavailable:
            if not was_connected:
                raise
            # The kept connection went stale, most often because gearmand restarted.
            logger.info("Reconnecting to Gearman server %s to submit a job of task %r", address, task)
            return self._send_submit(connection, packet_type, task, unique, data)

    def _send_submit(self, connection, packet_type, task, unique, data) -> bytes:
        self._enable_exceptions(connection)
        reply = self._request(connection, packet_type, (task, unique, data), {PacketType.JOB_CREATED})
        return reply.args[0]

    def _enable_exceptions(self, connection: Connection) -> None:
        # Without this option gearmand turns a worker's WORK_EXCEPTION into a WORK_FAIL
        # and the exception text is lost.
        if connection.connected and connection.address in self._exceptions_enabled:
            return
        self._exceptions_enabled.discard(connection.address)
        self._request(connection, PacketType.OPTION_REQ, (b"exceptions",), {PacketType.OPTION_RES})
        self._exceptions_enabled.add(connection.address)

    def _request(self, connection, packet_type, args, expected_types):
        connection.connect()
        connection.send_packet(packet_type, *args)
        try:
            reply = connection.read_packet(timeout=connection.io_timeout)
        except TimeoutError as exc:
            connection.close()
            raise ServerUnavailable(str(exc)) from None
        if reply.type == PacketType.ERROR:
            raise _server_error(reply.args, connection.address)
        if reply.type not in expected_types:
            connection.close()
            raise ProtocolError(
                f"Gearman server {connection.address} sent {reply.type.name} in reply to {packet_type.name}"
            )
        return reply

    def _wait_for_result(self, address, task, handle, result: JobResult, timeout) -> None:
        connection = self._connections[address]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                packet = connection.read_packet(timeout=remaining)
            except TimeoutError:
                connection.close()
                raise JobTimeout(
                    f"job {result.handle} of task {task.decode('utf-8', 'replace')!r} did not finish within "
                    f"{timeout:g} s; gearmand keeps it queued and may still run it"
                ) from None
            except ServerUnavailable as exc:
                raise ServerUnavailable(
                    f"lost the connection while waiting for job {result.handle}: {exc}; the job may still run"
                ) from None

            if packet.type == PacketType.ERROR:
                raise _server_error(packet.args, address)
            # WORK_FAIL that gearmand converted from WORK_EXCEPTION carries a trailing NUL.
            packet_handle = packet.args[0].rstrip(b"\x00") if packet.args else b""
            if packet_handle != handle:
                logger.debug("Ignoring %s for unknown job %r from %s", packet.type.name, packet_handle, address)
                continue

            task_text = task.decode("utf-8", "replace")
            if packet.type == PacketType.WORK_COMPLETE:
                result.result = packet.args[1]
                return
            if packet.type == PacketType.WORK_EXCEPTION:
                raise JobFailed(task_text, result.handle, packet.args[1].decode("utf-8", "replace"))
            if packet.type == PacketType.WORK_FAIL:
                raise JobFailed(task_text, result.handle)
            if packet.type == PacketType.WORK_DATA:
                result.data_chunks.append(packet.args[1])
            elif packet.type == PacketType.WORK_WARNING:
                result.warnings.append(packet.args[1])
            elif packet.type == PacketType.WORK_STATUS:
                result.status = (_to_int(packet.args[1]), _to_int(packet.args[2]))


def _server_error(args, address) -> ServerError:
    code, text = (args + (b"", b""))[:2]
    code_text = code.decode("utf-8", "replace")
    message = text.decode("utf-8", "replace")
    # gearmand 1.1.20 rejects a submit to a full queue with an ERROR packet whose code
    # contains QUEUE_ERROR and whose text is "Job queue is full".
    if b"QUEUE" in code.upper() or b"queue is full" in text.lower():
        return QueueFull(code_text, message, address)
    return ServerError(code_text, message, address)


def _to_int(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        return 0
