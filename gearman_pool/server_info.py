"""gearmand's admin text protocol: server version, task queues and connected workers.

The reply formats below were checked against gearmand 1.1.20:

- ``version`` and ``getpid`` reply with one line, ``OK 1.1.20+ds`` or ``OK <pid>``.
- ``status`` replies with ``task<TAB>total<TAB>running<TAB>available_workers`` lines and a
  final ``.`` line. ``total`` includes the running jobs.
- ``workers`` replies with ``fd ip client_id : task task ...`` lines and a final ``.``
  line. The client id is ``-`` when the worker set none, and a connection without tasks
  (a client, or this admin connection) ends with `` :``.
- Every error is one line ``ERR CODE message`` with ``+`` for each space in the message.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Iterable

from gearman_pool.address import ServerAddress
from gearman_pool.connection import DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT, AdminConnection
from gearman_pool.errors import ProtocolError, ServerError, ServerUnavailable
from gearman_pool.info_tables import render_reports

logger = logging.getLogger(__name__)

LISTING_END = b"."
# A listing longer than this is a broken or hostile server, not a real task list; the
# cap bounds the memory one reply can take.
MAX_LISTING_LINES = 100_000
# Errors that make one server's report fail while the other servers still report.
REPORT_ERRORS = (ServerUnavailable, TimeoutError, ProtocolError, ServerError)
# Servers are queried in parallel, so one slow server costs one timeout, not one per server.
MAX_PARALLEL_QUERIES = 8


@dataclasses.dataclass(frozen=True)
class TaskStatus:
    """One line of ``status``: a task's job counts and the number of workers that can run it."""

    task: str
    total: int
    running: int
    workers: int

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker: gearmand's total minus the running jobs."""
        return max(0, self.total - self.running)


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """One line of ``workers``: a connection and the tasks it registered, sorted by name."""

    fd: int
    ip: str
    client_id: str
    tasks: tuple[str, ...]


@dataclasses.dataclass
class ServerReport:
    """The version, tasks and workers of one server, or the error that stopped the query.

    ``response_time`` is the ``version`` round trip in seconds, without the TCP connect.
    When ``error`` is set, the fields that were not read yet are None or empty.
    """

    address: ServerAddress
    version: str | None = None
    response_time: float | None = None
    tasks: list[TaskStatus] = dataclasses.field(default_factory=list)
    workers: list[WorkerInfo] = dataclasses.field(default_factory=list)
    error: str | None = None


class AdminClient:
    """A client for gearmand's admin text protocol on one server.

    Each request must receive its whole reply within ``io_timeout`` seconds, or it
    raises TimeoutError and closes the connection. The next request reconnects.
    Not thread-safe: use one client per thread.
    """

    def __init__(
        self,
        address: ServerAddress | str,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        io_timeout: float = DEFAULT_IO_TIMEOUT,
    ):
        if isinstance(address, str):
            address = ServerAddress.parse(address)
        self.address = address
        self.io_timeout = io_timeout
        self._connection = AdminConnection(
            address, connect_timeout=connect_timeout, io_timeout=io_timeout
        )

    def __repr__(self):
        return f"<{type(self).__name__} {self.address}>"

    def connect(self) -> None:
        """Open the connection now instead of on the first request. Raises ServerUnavailable."""
        self._connection.connect()

    def close(self) -> None:
        self._connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def version(self) -> str:
        """Return the server's version string, e.g. ``1.1.20+ds``."""
        return self._request_ok(b"version")

    def getpid(self) -> int:
        """Return the process id of gearmand on the server's host."""
        text = self._request_ok(b"getpid")
        # str.isdigit() alone also accepts non-ASCII digits such as "²", which int() rejects.
        if not (text.isascii() and text.isdigit()):
            self.close()
            raise ProtocolError(
                f"Gearman server {self.address} sent {text!r} in reply to getpid, expected a pid"
            )
        return int(text)

    def status(self) -> list[TaskStatus]:
        """Return the job counts of every task registered or queued at the server, unsorted."""
        return self._request_listing(b"status", _parse_status_line)

    def workers(self) -> list[WorkerInfo]:
        """Return every connection to the server, including clients and this admin connection."""
        return self._request_listing(b"workers", _parse_workers_line)

    def maxqueue(self, task: str | bytes, size: int) -> None:
        """Limit the number of queued jobs of ``task`` to ``size``, where 0 means unlimited.

        gearmand 1.1.20 applies the limit only to a task that it already has, because a
        worker registered it or a job of it was submitted. For any other name it still
        replies OK, but the task is created later without a limit.
        Raises ValueError for a negative size or a task name that the admin protocol
        cannot carry, and ServerError when gearmand rejects the request.
        """
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(
                f"invalid maxqueue size {size!r}: expected an integer of at least 0 "
                "(0 is unlimited)"
            )
        name = task.encode("utf-8") if isinstance(task, str) else bytes(task)
        # The admin protocol splits a command at white space, so such a name would reach
        # gearmand as several arguments.
        if not name or any(byte in b" \t\r\n\x00" for byte in name):
            raise ValueError(
                f"invalid task name {task!r}: expected a non-empty name without white space or NUL"
            )
        reply = self._request_ok(b"maxqueue " + name + b" " + str(size).encode("ascii"))
        if reply:
            logger.debug("Gearman server %s replied OK %r to maxqueue", self.address, reply)

    def _request_ok(self, command: bytes) -> str:
        """Send a command whose reply is one ``OK [text]`` line and return the text."""
        deadline = self._send(command)
        line = self._read_line(command, deadline)
        if _is_error_line(line):
            raise _parse_error_line(line, self.address)
        if line == b"OK" or line.startswith(b"OK "):
            return line[3:].decode("utf-8", "replace").strip()
        self.close()
        raise ProtocolError(
            f"Gearman server {self.address} sent {line[:200]!r} in reply to "
            f"{command.decode()!r}, expected 'OK'"
        )

    def _request_listing(self, command: bytes, parse_line):
        """Send a command whose reply is lines ended by ``.`` and return the parsed lines.

        A line that ``parse_line`` rejects with ValueError is skipped and logged.
        """
        deadline = self._send(command)
        items = []
        skipped = 0
        first = True
        while True:
            line = self._read_line(command, deadline)
            if line == LISTING_END:
                break
            if first and _is_error_line(line):
                raise _parse_error_line(line, self.address)
            first = False
            if len(items) + skipped >= MAX_LISTING_LINES:
                self.close()
                raise ProtocolError(
                    f"Gearman server {self.address} sent more than {MAX_LISTING_LINES} lines in reply to "
                    f"{command.decode()!r}; the listing was abandoned"
                )
            try:
                items.append(parse_line(line))
            except ValueError as exc:
                skipped += 1
                # Only the first bad line is logged in full, so a broken server cannot
                # flood the log. The count of the others follows the listing.
                if skipped == 1:
                    logger.warning(
                        "Skipped a malformed %s line from Gearman server %s: %s: %r",
                        command.decode(),
                        self.address,
                        exc,
                        line[:200],
                    )
        if skipped > 1:
            logger.warning(
                "Skipped %d malformed %s lines in total from Gearman server %s",
                skipped,
                command.decode(),
                self.address,
            )
        return items

    def _send(self, command: bytes) -> float:
        """Send one command and return the deadline of its whole reply."""
        self._connection.connect()
        self._connection.send_line(command)
        return time.monotonic() + self.io_timeout

    def _read_line(self, command: bytes, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            return self._connection.read_line(timeout=remaining)
        except TimeoutError:
            self.close()
            raise TimeoutError(
                f"Gearman server {self.address} did not complete its reply to {command.decode()!r} "
                f"within {self.io_timeout:g} s"
            ) from None


def _is_error_line(line: bytes) -> bool:
    # A status line of a task named "ERR x" contains tabs, an ERR reply does not.
    return (line == b"ERR" or line.startswith(b"ERR ")) and b"\t" not in line


def _parse_error_line(line: bytes, address: ServerAddress) -> ServerError:
    parts = line.decode("utf-8", "replace").split(" ", 2)
    code = parts[1] if len(parts) > 1 else "ERR"
    # gearmand writes each space of the message as "+".
    text = parts[2].replace("+", " ") if len(parts) > 2 else ""
    return ServerError(code, text, address)


def _decode(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _parse_count(value: bytes, field: str) -> int:
    # bytes.isdigit() accepts ASCII digits only, unlike int(), which also takes
    # signs, underscores and spaces.
    if not value.isdigit():
        raise ValueError(f"{field} {value[:50]!r} is not a non-negative integer")
    return int(value)


def _parse_status_line(line: bytes) -> TaskStatus:
    fields = line.split(b"\t")
    if len(fields) != 4:
        raise ValueError(f"expected 4 tab-separated fields, got {len(fields)}")
    name, total, running, workers = fields
    if not name:
        raise ValueError("the task name is empty")
    return TaskStatus(
        task=_decode(name),
        total=_parse_count(total, "total"),
        running=_parse_count(running, "running"),
        workers=_parse_count(workers, "workers"),
    )


def _parse_workers_line(line: bytes) -> WorkerInfo:
    fields = line.split(b" ", 2)
    if len(fields) != 3:
        raise ValueError("expected 'fd ip client_id : tasks'")
    fd, ip, rest = fields
    fd_number = _parse_count(fd, "file descriptor")
    if not ip:
        raise ValueError("the IP address is empty")

    # NOTE: gearmand 1.1.20 does not escape spaces, so this parser cannot distinguish a
    # client id that contains " : " or a task name that contains a space. The first " : "
    # is taken as the separator, and task names are split at spaces.
    separator = rest.find(b" : ")
    if separator != -1:
        client_id, task_field = rest[:separator], rest[separator + 3 :]
    elif rest.endswith(b" :"):
        client_id, task_field = rest[:-2], b""
    else:
        raise ValueError("missing ' : ' between the client id and the tasks")
    tasks = tuple(sorted(_decode(name) for name in task_field.split()))
    return WorkerInfo(fd=fd_number, ip=_decode(ip), client_id=_decode(client_id), tasks=tasks)


def collect_report(
    address: ServerAddress | str,
    task_filter: str | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    io_timeout: float = DEFAULT_IO_TIMEOUT,
) -> ServerReport:
    """Query one server and return its report, with ``error`` set if the query failed.

    With ``task_filter``, only tasks whose name contains it (case-sensitive) are kept,
    and only workers that serve one of those tasks. Workers without any task are always
    left out. Tasks are sorted by name, workers by (tasks, ip, fd).
    """
    if isinstance(address, str):
        address = ServerAddress.parse(address)
    report = ServerReport(address=address)
    try:
        with AdminClient(address, connect_timeout=connect_timeout, io_timeout=io_timeout) as client:
            client.connect()
            started = time.monotonic()
            report.version = client.version()
            report.response_time = time.monotonic() - started
            tasks = client.status()
            workers = client.workers()
    except REPORT_ERRORS as exc:
        # The report carries the error to the caller, which shows it, so a log record
        # above DEBUG would print the same error twice on a console.
        logger.debug("Gearman server %s did not report: %s", address, exc)
        report.error = str(exc) or type(exc).__name__
        return report

    report.tasks = sorted(
        (status for status in tasks if _matches(status.task, task_filter)),
        key=lambda status: status.task,
    )
    report.workers = sorted(
        (
            worker
            for worker in workers
            if worker.tasks and any(_matches(task, task_filter) for task in worker.tasks)
        ),
        key=lambda worker: (worker.tasks, worker.ip, worker.fd),
    )
    return report


def _matches(task: str, task_filter: str | None) -> bool:
    return not task_filter or task_filter in task


def collect_reports(
    addresses: Iterable[ServerAddress | str],
    task_filter: str | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    io_timeout: float = DEFAULT_IO_TIMEOUT,
) -> list[ServerReport]:
    """Query every server in parallel and return one report per server, in the given order.

    A server that is down, times out or sends a malformed or ERR reply gets a report with
    ``error`` set, and the other servers still report. Raises InvalidServerAddress for a
    malformed address string before any server is queried.
    """
    parsed = [
        ServerAddress.parse(address) if isinstance(address, str) else address
        for address in addresses
    ]
    if not parsed:
        return []
    thread_count = min(len(parsed), MAX_PARALLEL_QUERIES)
    with concurrent.futures.ThreadPoolExecutor(max_workers=thread_count) as executor:
        return list(
            executor.map(
                lambda address: collect_report(address, task_filter, connect_timeout, io_timeout),
                parsed,
            )
        )


class GearmanServerInfo:
    """The 0.x API: ``GearmanServerInfo("127.0.0.1:4730").get_server_info()`` returns text tables.

    Unlike 0.x, an unreachable server does not raise: the text shows it as unavailable,
    and ``error`` contains the reason. ``tasks`` and ``workers`` are lists of TaskStatus
    and WorkerInfo instead of python-gearman's dicts.
    """

    def __init__(self, host: str):
        self.host = host
        self.server_version: str | None = None
        self.tasks: list[TaskStatus] | None = None
        self.workers: list[WorkerInfo] | None = None
        self.error: str | None = None

    def get_server_info(self) -> str:
        """Query the server and return its version, task and worker tables as text."""
        report = collect_report(self.host)
        self.server_version = report.version
        self.tasks = report.tasks
        self.workers = report.workers
        self.error = report.error
        return render_reports([report])
