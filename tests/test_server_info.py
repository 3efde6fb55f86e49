"""Tests of the admin protocol client and of collect_reports.

The parsing tests talk to FakeAdminServer, which replays canned replies, so that error,
malformed and never-ending replies can be produced. The replies that imitate gearmand
were copied from gearmand 1.1.20. The other tests use a real gearmand.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

import pytest

from gearman_pool.address import ServerAddress
from gearman_pool.client import GearmanClient
from gearman_pool.errors import ProtocolError, QueueFull, ServerError, ServerUnavailable
from gearman_pool.server_info import (
    AdminClient,
    GearmanServerInfo,
    ServerReport,
    TaskStatus,
    WorkerInfo,
    collect_report,
    collect_reports,
)
from gearman_pool.worker import GearmanWorker
from tests.helpers import closed_port_address, unique_task, wait_until

# Short, so that the timeout tests run fast, but long enough for a loaded CI machine to
# send a canned reply in time.
SHORT_TIMEOUT = 0.5
# Extra time a timed-out request may take beyond its timeout before a test fails.
TIMEOUT_SLACK = 1.0
WAIT_TIMEOUT = 10.0

ReplyAction = Callable[[socket.socket, threading.Event], None]


class FakeAdminServer:
    """A TCP server on 127.0.0.1 that sends a canned reply to each admin command line.

    ``replies`` maps a command line (without its line ending) to the bytes to send, or to
    a function that writes to the connection itself. An unknown command gets the ERR reply
    of gearmand 1.1.20. Every connection runs in its own thread, and ``commands`` lists the
    lines received, in order.
    """

    def __init__(self, replies: dict[bytes, bytes | ReplyAction]):
        self.replies = replies
        self.commands: list[bytes] = []
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connections: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self._listener.settimeout(0.05)
        self.address = ServerAddress("127.0.0.1", self._listener.getsockname()[1])

    def __enter__(self) -> FakeAdminServer:
        self._start_thread(self._accept_loop)
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        for connection in list(self._connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(WAIT_TIMEOUT)
        self._listener.close()
        for connection in self._connections:
            connection.close()

    def _start_thread(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _peer = self._listener.accept()
            except TimeoutError:
                continue
            self._connections.append(connection)
            self._start_thread(self._serve, connection)

    def _serve(self, connection: socket.socket) -> None:
        buffer = b""
        connection.settimeout(0.05)
        while not self._stopping.is_set():
            try:
                data = connection.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                command = line.rstrip(b"\r")
                self.commands.append(command)
                reply = self.replies.get(
                    command, b"ERR UNKNOWN_COMMAND Unknown+server+command" + command + b"\r\n"
                )
                try:
                    if callable(reply):
                        reply(connection, self._stopping)
                    else:
                        connection.sendall(reply)
                except OSError:
                    return


def send_lines_slowly(line: bytes, interval: float) -> ReplyAction:
    """Return a reply action that sends ``line`` every ``interval`` seconds and never ends."""

    def send(connection: socket.socket, stopping: threading.Event) -> None:
        while not stopping.wait(interval):
            connection.sendall(line)

    return send


def close_after(data: bytes) -> ReplyAction:
    """Return a reply action that sends ``data`` and then closes the connection."""

    def send(connection: socket.socket, stopping: threading.Event) -> None:
        connection.sendall(data)
        connection.shutdown(socket.SHUT_RDWR)

    return send


@pytest.fixture
def running_worker():
    """Start a GearmanWorker in a thread. The fixture stops and joins every worker it started."""
    started: list[tuple[GearmanWorker, threading.Thread]] = []

    def start(
        address: ServerAddress, tasks: list[bytes], client_id: str | None = None
    ) -> GearmanWorker:
        handlers = {task: lambda job: b"done" for task in tasks}
        worker = GearmanWorker([address], handlers, client_id=client_id)
        thread = threading.Thread(target=worker.work, daemon=True)
        thread.start()
        started.append((worker, thread))
        return worker

    yield start

    for worker, thread in started:
        worker.request_stop()
        thread.join(WAIT_TIMEOUT)
        worker.close()
        assert not thread.is_alive(), "a worker thread did not stop"


# Replies of the fake server --------------------------------------------------------------


def test_version_returns_text_after_ok():
    replies = {b"version": b"OK 1.1.20+ds\n"}
    with FakeAdminServer(replies) as server, AdminClient(server.address) as client:
        assert client.version() == "1.1.20+ds"


def test_getpid_returns_integer():
    replies = {b"getpid": b"OK 4242\n"}
    with FakeAdminServer(replies) as server, AdminClient(server.address) as client:
        assert client.getpid() == 4242


@pytest.mark.parametrize("reply", [b"OK abc\n", b"OK -1\n", "OK \u00b2\n".encode(), b"OK\n"])
def test_getpid_non_integer_raises_protocol_error(reply):
    with FakeAdminServer({b"getpid": reply}) as server, AdminClient(server.address) as client:
        with pytest.raises(ProtocolError, match="getpid"):
            client.getpid()


def test_unexpected_reply_raises_protocol_error():
    with FakeAdminServer({b"version": b"HELLO\n"}) as server, AdminClient(server.address) as client:
        with pytest.raises(ProtocolError, match="HELLO"):
            client.version()


def test_err_crlf_reply_raises_server_error():
    # The reply is gearmand 1.1.20's to an unknown command.
    with FakeAdminServer({}) as server, AdminClient(server.address) as client:
        with pytest.raises(ServerError) as raised:
            client.version()

    assert raised.value.code == "UNKNOWN_COMMAND"
    assert raised.value.text == "Unknown server commandversion"
    assert raised.value.address == server.address


def test_err_reply_to_listing_raises_server_error():
    reply = b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments\r\n"
    with FakeAdminServer({b"status": reply}) as server, AdminClient(server.address) as client:
        with pytest.raises(ServerError) as raised:
            client.status()

    assert raised.value.code == "INVALID_ARGUMENTS"
    assert raised.value.text == "An incomplete set of arguments"


def test_err_without_message_raises_server_error():
    with FakeAdminServer({b"version": b"ERR\r\n"}) as server, AdminClient(server.address) as client:
        with pytest.raises(ServerError) as raised:
            client.version()

    assert raised.value.text == ""


def test_connection_usable_after_server_error():
    replies = {b"getpid": b"ERR NO+PID\r\n", b"version": b"OK 1.1.20+ds\n"}
    with FakeAdminServer(replies) as server, AdminClient(server.address) as client:
        with pytest.raises(ServerError):
            client.getpid()
        assert client.version() == "1.1.20+ds"

    assert server.commands == [b"getpid", b"version"]


def test_status_parses_counts():
    reply = b"resize\t5\t2\t3\nidle\t0\t0\t1\n.\n"
    with FakeAdminServer({b"status": reply}) as server, AdminClient(server.address) as client:
        statuses = client.status()

    assert statuses == [TaskStatus("resize", 5, 2, 3), TaskStatus("idle", 0, 0, 1)]
    assert statuses[0].queued == 3
    assert statuses[1].queued == 0


def test_status_empty_listing():
    with FakeAdminServer({b"status": b".\n"}) as server, AdminClient(server.address) as client:
        assert client.status() == []


def test_status_accepts_crlf_lines():
    reply = b"resize\t1\t0\t0\r\n.\r\n"
    with FakeAdminServer({b"status": reply}) as server, AdminClient(server.address) as client:
        assert client.status() == [TaskStatus("resize", 1, 0, 0)]


def test_status_decodes_non_utf8_name():
    reply = b"q\xffname\t2\t0\t0\n.\n"
    with FakeAdminServer({b"status": reply}) as server, AdminClient(server.address) as client:
        statuses = client.status()

    assert [status.task for status in statuses] == ["q\ufffdname"]
    assert statuses[0].queued == 2


def test_status_task_named_err_is_not_error():
    reply = b"ERR task\t1\t0\t0\n.\n"
    with FakeAdminServer({b"status": reply}) as server, AdminClient(server.address) as client:
        assert client.status() == [TaskStatus("ERR task", 1, 0, 0)]


def test_status_skips_malformed_lines(caplog):
    reply = (
        b"good\t4\t1\t2\n"
        b"too\tfew\n"
        b"too\t1\t2\t3\t4\n"
        b"letters\tx\t0\t0\n"
        b"negative\t-1\t0\t0\n"
        b"spaces\t 1\t0\t0\n"
        b"\t1\t0\t0\n"
        b"\n"
        b"also-good\t1\t0\t0\n"
        b".\n"
    )
    with FakeAdminServer({b"status": reply}) as server, AdminClient(server.address) as client:
        with caplog.at_level(logging.WARNING, logger="gearman_pool.server_info"):
            statuses = client.status()

    assert statuses == [TaskStatus("good", 4, 1, 2), TaskStatus("also-good", 1, 0, 0)]
    messages = [record.getMessage() for record in caplog.records]
    # One warning shows the first bad line and one more gives the total, instead of one each.
    assert len(messages) == 2
    assert "too\\tfew" in messages[0]
    assert "Skipped 7 malformed status lines" in messages[1]


def test_workers_parses_lines():
    reply = (
        b"21 127.0.0.1 - :\n"
        b"20 127.0.0.1 cid 1 : b a\n"
        b"19 10.0.0.5 host-42 : resize\n"
        b".\n"
    )
    with FakeAdminServer({b"workers": reply}) as server, AdminClient(server.address) as client:
        workers = client.workers()

    assert workers == [
        WorkerInfo(21, "127.0.0.1", "-", ()),
        WorkerInfo(20, "127.0.0.1", "cid 1", ("a", "b")),
        WorkerInfo(19, "10.0.0.5", "host-42", ("resize",)),
    ]


def test_workers_decodes_non_utf8_names():
    reply = b"7 127.0.0.1 id\xfe : t\xff\n.\n"
    with FakeAdminServer({b"workers": reply}) as server, AdminClient(server.address) as client:
        workers = client.workers()

    assert workers == [WorkerInfo(7, "127.0.0.1", "id\ufffd", ("t\ufffd",))]


def test_workers_skips_malformed_lines(caplog):
    reply = (
        b"x 127.0.0.1 - : a\n"
        b"8 127.0.0.1 no-separator a\n"
        b"9\n"
        b"10 127.0.0.1 - : good\n"
        b".\n"
    )
    with FakeAdminServer({b"workers": reply}) as server, AdminClient(server.address) as client:
        with caplog.at_level(logging.WARNING, logger="gearman_pool.server_info"):
            workers = client.workers()

    assert workers == [WorkerInfo(10, "127.0.0.1", "-", ("good",))]
    assert len(caplog.records) == 2
    assert "Skipped 3 malformed workers lines" in caplog.records[1].getMessage()


def test_reply_never_ending_times_out():
    # The listing never gets its final "." line.
    with FakeAdminServer({b"status": b"resize\t1\t0\t0\n"}) as server:
        with AdminClient(server.address, io_timeout=SHORT_TIMEOUT) as client:
            started = time.monotonic()
            with pytest.raises(TimeoutError, match="did not complete its reply to 'status'"):
                client.status()
            elapsed = time.monotonic() - started

    assert elapsed >= SHORT_TIMEOUT * 0.9
    assert elapsed < SHORT_TIMEOUT + TIMEOUT_SLACK


def test_slow_endless_reply_times_out():
    # Each line arrives well within the timeout, so only a deadline for the whole reply
    # ends the request.
    slow = send_lines_slowly(b"resize\t1\t0\t0\n", SHORT_TIMEOUT / 5)
    with FakeAdminServer({b"status": slow}) as server:
        with AdminClient(server.address, io_timeout=SHORT_TIMEOUT) as client:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                client.status()
            elapsed = time.monotonic() - started

    assert elapsed < SHORT_TIMEOUT + TIMEOUT_SLACK


def test_missing_reply_times_out():
    with FakeAdminServer({b"version": b""}) as server:
        with AdminClient(server.address, io_timeout=SHORT_TIMEOUT) as client:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                client.version()
            elapsed = time.monotonic() - started

    assert elapsed < SHORT_TIMEOUT + TIMEOUT_SLACK


def test_request_after_timeout_reconnects():
    replies = {b"status": b"resize\t1\t0\t0\n", b"version": b"OK 1.1.20+ds\n"}
    with FakeAdminServer(replies) as server:
        with AdminClient(server.address, io_timeout=SHORT_TIMEOUT) as client:
            with pytest.raises(TimeoutError):
                client.status()
            # A late end of the status listing must not be read as the version reply.
            assert client.version() == "1.1.20+ds"


def test_connection_closed_mid_reply_raises_unavailable():
    replies = {b"status": close_after(b"resize\t1\t0\t0\n")}
    with FakeAdminServer(replies) as server, AdminClient(server.address) as client:
        with pytest.raises(ServerUnavailable, match="closed the connection"):
            client.status()


def test_closed_port_raises_unavailable():
    with AdminClient(closed_port_address(), connect_timeout=SHORT_TIMEOUT) as client:
        with pytest.raises(ServerUnavailable, match="connection refused"):
            client.version()


def test_client_accepts_address_string():
    with FakeAdminServer({b"version": b"OK 1.1.20+ds\n"}) as server:
        with AdminClient(str(server.address)) as client:
            assert client.address == server.address
            assert client.version() == "1.1.20+ds"


def test_maxqueue_sends_command():
    replies = {b"maxqueue resize 3": b"OK\r\n"}
    with FakeAdminServer(replies) as server, AdminClient(server.address) as client:
        assert client.maxqueue("resize", 3) is None
        assert client.maxqueue(b"resize", 3) is None

    assert server.commands == [b"maxqueue resize 3", b"maxqueue resize 3"]


@pytest.mark.parametrize("size", [-1, True, 1.5, "3", None])
def test_maxqueue_rejects_invalid_size(size):
    with FakeAdminServer({}) as server, AdminClient(server.address) as client:
        with pytest.raises(ValueError, match="invalid maxqueue size"):
            client.maxqueue("resize", size)

    assert server.commands == []


@pytest.mark.parametrize("task", ["", "two words", "tab\there", "line\nbreak", b"nul\x00"])
def test_maxqueue_rejects_invalid_task(task):
    with FakeAdminServer({}) as server, AdminClient(server.address) as client:
        with pytest.raises(ValueError, match="invalid task name"):
            client.maxqueue(task, 1)

    assert server.commands == []


# collect_reports with fake servers -------------------------------------------------------


WORKERS_REPLY = (
    b"30 127.0.0.1 - :\n"
    b"31 127.0.0.2 w2 : resize thumbnail\n"
    b"32 127.0.0.1 w1 : thumbnail resize\n"
    b"33 127.0.0.1 w3 : send_mail\n"
    b"34 127.0.0.1 w4 :\n"
    b".\n"
)
STATUS_REPLY = b"thumbnail\t2\t1\t2\nsend_mail\t0\t0\t1\nresize\t7\t2\t2\n.\n"
HEALTHY_REPLIES = {
    b"version": b"OK 1.1.20+ds\n",
    b"status": STATUS_REPLY,
    b"workers": WORKERS_REPLY,
}


def test_report_sorts_tasks_and_workers():
    with FakeAdminServer(HEALTHY_REPLIES) as server:
        report = collect_report(server.address)

    assert report.error is None
    assert report.version == "1.1.20+ds"
    assert report.response_time is not None
    assert 0 <= report.response_time < WAIT_TIMEOUT
    assert [status.task for status in report.tasks] == ["resize", "send_mail", "thumbnail"]
    assert report.tasks[0].queued == 5
    # Workers without a task (fd 30, 34) are left out, and each worker is one row.
    assert [(worker.fd, worker.tasks) for worker in report.workers] == [
        (32, ("resize", "thumbnail")),
        (31, ("resize", "thumbnail")),
        (33, ("send_mail",)),
    ]


def test_report_filter_is_case_sensitive_substring():
    with FakeAdminServer(HEALTHY_REPLIES) as server:
        report = collect_report(server.address, task_filter="size")
        upper_case = collect_report(server.address, task_filter="SIZE")

    assert [status.task for status in report.tasks] == ["resize"]
    assert [worker.fd for worker in report.workers] == [32, 31]
    assert upper_case.tasks == []
    assert upper_case.workers == []


def test_report_of_err_reply_has_error():
    replies = {**HEALTHY_REPLIES, b"workers": b"ERR BROKEN Something+failed\r\n"}
    with FakeAdminServer(replies) as server:
        report = collect_report(server.address)

    assert report.error is not None
    assert "BROKEN" in report.error
    assert "Something failed" in report.error
    assert report.version == "1.1.20+ds"


def test_reports_keep_order_and_isolate_failures():
    down = closed_port_address()
    with FakeAdminServer(HEALTHY_REPLIES) as first, FakeAdminServer(HEALTHY_REPLIES) as second:
        addresses = [first.address, str(down), second.address]
        reports = collect_reports(addresses, connect_timeout=SHORT_TIMEOUT)

    assert [report.address for report in reports] == [first.address, down, second.address]
    assert reports[0].error is None
    assert reports[2].error is None
    assert "connection refused" in reports[1].error
    assert reports[1].version is None
    assert reports[1].tasks == []


def test_reports_query_servers_in_parallel():
    timeout = 1.0
    hanging = {**HEALTHY_REPLIES, b"status": b"resize\t1\t0\t0\n"}
    with FakeAdminServer(hanging) as first, FakeAdminServer(hanging) as second:
        started = time.monotonic()
        reports = collect_reports([first.address, second.address], io_timeout=timeout)
        elapsed = time.monotonic() - started

    assert "did not complete" in reports[0].error
    assert "did not complete" in reports[1].error
    # One query after the other would take at least 2 timeouts.
    assert elapsed < 1.8 * timeout


def test_reports_of_no_servers_is_empty():
    assert collect_reports([]) == []


def test_server_info_back_compat_text():
    with FakeAdminServer(HEALTHY_REPLIES) as server:
        info = GearmanServerInfo(str(server.address))
        text = info.get_server_info()

    assert "1.1.20+ds" in text
    assert "| Task " in text
    assert "| Worker IP " in text
    assert info.server_version == "1.1.20+ds"
    assert [status.task for status in info.tasks] == ["resize", "send_mail", "thumbnail"]
    assert info.error is None


def test_server_info_back_compat_down_server():
    info = GearmanServerInfo(str(closed_port_address()))
    text = info.get_server_info()

    assert "unavailable: " in text
    assert "connection refused" in info.error


# Real gearmand ---------------------------------------------------------------------------


def test_version_and_getpid_of_gearmand(private_gearmand):
    with AdminClient(private_gearmand.address) as client:
        version = client.version()
        pid = client.getpid()

    assert version
    assert not version.startswith("OK")
    assert pid == private_gearmand.process.pid


def test_queued_jobs_without_workers(gearmand_address):
    task = unique_task("queued")
    address = ServerAddress.parse(gearmand_address)
    with GearmanClient([address]) as client:
        for number in range(3):
            client.submit_job(task.encode(), f"job {number}".encode())

    with AdminClient(address) as admin:
        statuses = {status.task: status for status in admin.status()}
    report = collect_report(address, task_filter=task)

    assert statuses[task] == TaskStatus(task, total=3, running=0, workers=0)
    assert statuses[task].queued == 3
    assert report.error is None
    assert report.tasks == [TaskStatus(task, 3, 0, 0)]
    assert report.workers == []


def test_worker_with_two_tasks_listed_once(gearmand_address, running_worker):
    first, second = unique_task("first"), unique_task("second")
    address = ServerAddress.parse(gearmand_address)
    client_id = unique_task("client")
    running_worker(address, [first.encode(), second.encode()], client_id=client_id)

    def registered() -> bool:
        report = collect_report(address, task_filter=first)
        return bool(report.workers)

    wait_until(registered, message="the worker to register")
    report = collect_report(address, task_filter=first)
    by_second_task = collect_report(address, task_filter=second)
    every_task = collect_report(address)

    assert len(report.workers) == 1
    assert report.workers[0].client_id == client_id
    assert report.workers[0].tasks == tuple(sorted([first, second]))
    assert report.workers[0].ip == "127.0.0.1"
    assert by_second_task.workers == report.workers
    assert [worker.client_id for worker in every_task.workers].count(client_id) == 1
    statuses = {status.task: status for status in every_task.tasks}
    assert statuses[first].workers == 1
    assert statuses[second].workers == 1


def test_stopped_worker_leaves_table(gearmand_address):
    task = unique_task("leaving")
    address = ServerAddress.parse(gearmand_address)
    worker = GearmanWorker([address], {task.encode(): lambda job: b""})
    thread = threading.Thread(target=worker.work, daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: bool(collect_report(address, task_filter=task).workers),
            message="the worker to register",
        )
    finally:
        worker.request_stop()
        thread.join(WAIT_TIMEOUT)
        worker.close()

    wait_until(
        lambda: not collect_report(address, task_filter=task).workers,
        message="the stopped worker to leave the report",
    )


def test_maxqueue_limits_known_task(private_gearmand):
    task = unique_task("limited")
    address = ServerAddress.parse(private_gearmand.address)
    with GearmanClient([address]) as client, AdminClient(address) as admin:
        # gearmand applies maxqueue only to a task that it already has.
        client.submit_job(task.encode(), b"1")
        admin.maxqueue(task, 2)
        client.submit_job(task.encode(), b"2")
        with pytest.raises(QueueFull):
            client.submit_job(task.encode(), b"3")

        admin.maxqueue(task, 0)
        client.submit_job(task.encode(), b"3")
        statuses = {status.task: status for status in admin.status()}

    assert statuses[task].queued == 3


def test_maxqueue_on_unknown_task_has_no_effect(private_gearmand):
    # gearmand 1.1.20 replies OK to maxqueue for a task it does not have, but keeps no limit.
    task = unique_task("unknown")
    address = ServerAddress.parse(private_gearmand.address)
    with GearmanClient([address]) as client, AdminClient(address) as admin:
        admin.maxqueue(task, 1)
        for number in range(3):
            client.submit_job(task.encode(), str(number).encode())
        statuses = {status.task: status for status in admin.status()}

    assert statuses[task].queued == 3


def test_stopped_gearmand_reports_error(private_gearmand, gearmand_address):
    stopped = private_gearmand.address
    private_gearmand.stop()

    reports = collect_reports([stopped, gearmand_address], connect_timeout=SHORT_TIMEOUT)

    assert reports[0].error is not None
    assert stopped in reports[0].error
    assert reports[1].error is None
    assert reports[1].version


def test_report_of_gearmand_is_a_server_report(gearmand_address):
    report = collect_report(gearmand_address)

    assert isinstance(report, ServerReport)
    assert report.error is None
    assert str(report.address) == gearmand_address
