"""GearmanClient, GearmanWorker and AdminClient against a fake server that sends hostile bytes.

Each call must end within its timeouts (plus SLACK for a busy machine) with a result or a
documented exception, and must not buffer without bound:

- GearmanClient.submit_job raises GearmanError subclasses only; bytes that are not Gearman
  protocol raise ProtocolError;
- GearmanWorker.work_once never raises: it drops the connection and reconnects later;
- AdminClient.status and .workers raise ServerUnavailable, TimeoutError, ProtocolError or
  ServerError (server_info.REPORT_ERRORS), and skip malformed listing lines.
"""

from __future__ import annotations

import logging
import threading
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gearman_pool.client import GearmanClient, JobResult
from gearman_pool.connection import DEFAULT_IO_TIMEOUT
from gearman_pool.errors import (
    GearmanError,
    JobTimeout,
    ProtocolError,
    QueueFull,
    ServerError,
    ServerUnavailable,
)
from gearman_pool.protocol import (
    ARGUMENT_COUNTS,
    HEADER,
    REQUEST_MAGIC,
    RESPONSE_MAGIC,
    PacketType,
    encode_request,
    encode_response,
)
from gearman_pool.server_info import MAX_LISTING_LINES, REPORT_ERRORS, AdminClient, TaskStatus
from gearman_pool.worker import GearmanWorker
from tests.faults.conftest import ScenarioReport
from tests.faults.fake_server import (
    FakeServer,
    ScriptedConnection,
    confirm_then,
    send_and_close,
    send_and_hold,
)

IO_TIMEOUT = 0.5
# Shorter for the hypothesis properties, which wait for a timeout in about half their examples.
PROPERTY_IO_TIMEOUT = 0.2
# Longer than TRICKLE_INTERVAL, so that a server sending one byte per second never lets a
# single wait time out: only a limit on the whole reply ends the call.
TRICKLE_IO_TIMEOUT = 2.5
TRICKLE_INTERVAL = 1.0
CONNECT_TIMEOUT = 1.0
TICK_INTERVAL = 0.2
# Seconds of scheduling delay tolerated on a busy 2-core machine.
SLACK = 2.0
# A client's submit waits for two replies (OPTION_RES, then JOB_CREATED), each up to IO_TIMEOUT.
CLIENT_BOUND = 2 * IO_TIMEOUT + SLACK
WORKER_BOUND = IO_TIMEOUT + TICK_INTERVAL + SLACK
ADMIN_BOUND = IO_TIMEOUT + SLACK
MEMORY_BOUND = 8 * 1024 * 1024
TASK = b"t"

OPTION_RES = encode_response(PacketType.OPTION_RES, b"exceptions")
JOB_CREATED = encode_response(PacketType.JOB_CREATED, b"H:fake:1")
VALID_SUBMIT_REPLY = OPTION_RES + JOB_CREATED


class Outcome:
    """What one call returned or raised, and how long it took, in seconds."""

    def __init__(self, call):
        started = time.monotonic()
        self.value = self.error = None
        try:
            self.value = call()
        except Exception as exc:  # the tests check the type
            self.error = exc
        self.elapsed = time.monotonic() - started


def make_client(server, io_timeout: float = IO_TIMEOUT) -> GearmanClient:
    return GearmanClient([server.address], connect_timeout=CONNECT_TIMEOUT, io_timeout=io_timeout)


def make_worker(server, io_timeout: float = IO_TIMEOUT) -> GearmanWorker:
    return GearmanWorker(
        [server.address],
        {TASK: lambda job: b"done:" + job.data},
        connect_timeout=CONNECT_TIMEOUT,
        io_timeout=io_timeout,
        tick_interval=TICK_INTERVAL,
        reconnect_max_delay=0.5,
    )


def trickle(data: bytes):
    def script(connection: ScriptedConnection) -> None:
        connection.read_available(0.05)
        connection.trickle(data, TRICKLE_INTERVAL)

    return script


def flood(prefix: bytes, chunk: bytes):
    def script(connection: ScriptedConnection) -> None:
        connection.read_available(0.05)
        if connection.send(prefix):
            connection.flood(chunk)

    return script


def header(packet_type: int, size: int, magic: bytes = RESPONSE_MAGIC) -> bytes:
    return HEADER.pack(magic, packet_type, size)


# ---- the same hostile replies for the client and the worker ----------------------------------

HOSTILE_PACKETS = {
    "truncated packet, then close": (send_and_close(OPTION_RES[:7]), ServerUnavailable),
    "truncated payload, then silence": (send_and_hold(OPTION_RES[:-3]), ServerUnavailable),
    "request magic": (
        send_and_hold(header(PacketType.OPTION_RES, 0, REQUEST_MAGIC)),
        ProtocolError,
    ),
    "text instead of packets": (
        send_and_hold(b"ERR UNKNOWN_COMMAND Unknown+server+command\r\n"),
        ProtocolError,
    ),
    "declared size 2**32-1": (
        send_and_hold(header(PacketType.OPTION_RES, 2**32 - 1)),
        ProtocolError,
    ),
    "declared 64 MiB, 1 MiB sent": (
        send_and_hold(header(PacketType.OPTION_RES, 64 * 1024 * 1024) + b"x" * 1024 * 1024),
        ServerUnavailable,
    ),
    "unknown packet type 99": (send_and_hold(header(99, 0)), ProtocolError),
    "empty reply, then close": (send_and_close(b""), ServerUnavailable),
}


class HostileStats:
    """The slowest call and the largest tracemalloc peak of this module's tests."""

    def __init__(self):
        self.calls = 0
        self.max_elapsed = 0.0
        self.max_peak = 0

    def record(self, outcome: Outcome, peak: int = 0) -> None:
        self.calls += 1
        self.max_elapsed = max(self.max_elapsed, outcome.elapsed)
        self.max_peak = max(self.max_peak, peak)


@pytest.fixture(scope="module")
def hostile_stats(fault_report):
    stats = HostileStats()
    yield stats
    fault_report.add(
        ScenarioReport(
            "9 hostile server bytes",
            seconds=stats.max_elapsed,
            notes=(
                f"{stats.calls} calls of the client, worker and admin client, scripted and "
                f"from hypothesis; slowest {stats.max_elapsed:.2f} s with io_timeout "
                f"{PROPERTY_IO_TIMEOUT:g} to {TRICKLE_IO_TIMEOUT:g} s; "
                f"largest tracemalloc peak {stats.max_peak / 2**20:.1f} MiB"
            ),
        )
    )


def traced(call) -> tuple[Outcome, int]:
    """Run ``call`` under tracemalloc; return its Outcome and the peak of traced memory in bytes."""
    tracemalloc.start()
    try:
        outcome = Outcome(call)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return outcome, peak


@pytest.fixture
def fake_server():
    servers = []

    def start(script) -> FakeServer:
        server = FakeServer(script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize("case", sorted(HOSTILE_PACKETS))
def test_client_hostile_reply(fake_server, hostile_stats, case):
    script, expected = HOSTILE_PACKETS[case]
    server = fake_server(script)

    with make_client(server) as client:
        outcome, peak = traced(lambda: client.submit_job(TASK, b"data"))
    hostile_stats.record(outcome, peak)

    assert isinstance(outcome.error, expected), repr(outcome.error)
    assert outcome.elapsed < CLIENT_BOUND
    assert peak < MEMORY_BOUND


def test_client_trickle_bounded(fake_server, hostile_stats):
    server = fake_server(trickle(VALID_SUBMIT_REPLY))

    with make_client(server, io_timeout=TRICKLE_IO_TIMEOUT) as client:
        outcome = Outcome(lambda: client.submit_job(TASK, b"data"))
    hostile_stats.record(outcome)

    assert isinstance(outcome.error, ServerUnavailable), repr(outcome.error)
    assert outcome.elapsed < 2 * TRICKLE_IO_TIMEOUT + SLACK


@pytest.mark.parametrize(
    "case, reply, expected",
    [
        ("unexpected NO_JOB", OPTION_RES + encode_response(PacketType.NO_JOB), ProtocolError),
        (
            "ERROR packet",
            encode_response(PacketType.ERROR, b"ERR_CODE", b"bad request"),
            ServerError,
        ),
        ("ERROR, non-UTF-8", encode_response(PacketType.ERROR, b"\xff\xfe", b"\xc3("), ServerError),
        (
            "queue full",
            OPTION_RES + encode_response(PacketType.ERROR, b"QUEUE_ERROR", b"Job queue is full"),
            QueueFull,
        ),
    ],
)
def test_client_error_replies(fake_server, hostile_stats, case, reply, expected):
    server = fake_server(send_and_hold(reply))

    with make_client(server) as client:
        outcome = Outcome(lambda: client.submit_job(TASK, b"data"))
    hostile_stats.record(outcome)

    assert isinstance(outcome.error, expected), repr(outcome.error)
    assert outcome.elapsed < CLIENT_BOUND


def test_client_non_utf8_handle(fake_server):
    server = fake_server(
        send_and_hold(OPTION_RES + encode_response(PacketType.JOB_CREATED, b"H:\xff\xfe:1"))
    )

    with make_client(server) as client:
        result = client.submit_job(TASK, b"data")

    assert result.handle == "H:\ufffd\ufffd:1"


def test_client_foreground_flood_times_out(fake_server, hostile_stats):
    # Progress packets for another job, as fast as the socket takes them.
    other_job = encode_response(PacketType.WORK_STATUS, b"H:fake:other", b"1", b"2")
    server = fake_server(flood(VALID_SUBMIT_REPLY, other_job * 1000))

    with make_client(server) as client:
        outcome, peak = traced(
            lambda: client.submit_job(TASK, b"data", background=False, timeout=IO_TIMEOUT)
        )
    hostile_stats.record(outcome, peak)

    assert isinstance(outcome.error, JobTimeout), repr(outcome.error)
    assert outcome.elapsed < CLIENT_BOUND
    assert peak < MEMORY_BOUND


@pytest.mark.parametrize("confirmed", [True, False], ids=["reply to GRAB_JOB", "reply to ECHO_REQ"])
@pytest.mark.parametrize("case", sorted(HOSTILE_PACKETS))
def test_worker_hostile_reply(fake_server, hostile_stats, case, confirmed, caplog):
    script, _client_error = HOSTILE_PACKETS[case]
    server = fake_server(confirm_then(script) if confirmed else script)
    worker = make_worker(server)

    try:
        with caplog.at_level(logging.WARNING, logger="gearman_pool.worker"):
            outcome, peak = traced(worker.work_once)
    finally:
        worker.close()
    hostile_stats.record(outcome, peak)

    assert outcome.error is None, repr(outcome.error)
    assert outcome.value is False
    assert outcome.elapsed < WORKER_BOUND
    assert peak < MEMORY_BOUND
    assert any("unavailable" in record.getMessage() for record in caplog.records)


def test_worker_trickle_bounded(fake_server, hostile_stats):
    server = fake_server(confirm_then(trickle(encode_response(PacketType.NO_JOB))))
    worker = make_worker(server, io_timeout=TRICKLE_IO_TIMEOUT)

    try:
        outcome = Outcome(worker.work_once)
    finally:
        worker.close()
    hostile_stats.record(outcome)

    assert outcome.error is None, repr(outcome.error)
    assert outcome.elapsed < TRICKLE_IO_TIMEOUT + TICK_INTERVAL + SLACK


def test_worker_runs_assigned_job(fake_server):
    assign = encode_response(
        PacketType.JOB_ASSIGN_UNIQ, b"H:\xff:7", TASK, b"unique", b"payload\x00\xff"
    )
    server = fake_server(confirm_then(send_and_hold(assign)))
    worker = make_worker(server)

    try:
        outcome = Outcome(worker.work_once)
        connection = server.connections[0]
        complete = encode_request(PacketType.WORK_COMPLETE, b"H:\xff:7", b"done:payload\x00\xff")
        reported = connection.wait_for(complete, timeout=5)
    finally:
        worker.close()

    assert outcome.error is None, repr(outcome.error)
    assert outcome.value is True
    assert reported


def test_worker_fails_job_of_unregistered_task(fake_server):
    assign = encode_response(
        PacketType.JOB_ASSIGN_UNIQ, b"H:fake:8", b"\xffother", b"unique", b"payload"
    )
    server = fake_server(confirm_then(send_and_hold(assign)))
    worker = make_worker(server)

    try:
        outcome = Outcome(worker.work_once)
        reported = server.connections[0].wait_for(
            encode_request(PacketType.WORK_FAIL, b"H:fake:8"), timeout=5
        )
    finally:
        worker.close()

    assert outcome.error is None, repr(outcome.error)
    assert reported


def noop_every(interval: float):
    """Send a NOOP every ``interval`` seconds, and never a job or NO_JOB, whatever the request."""

    def script(connection: ScriptedConnection) -> None:
        noop = encode_response(PacketType.NOOP)
        while connection.open and connection.send(noop):
            if not connection.read_available(interval):
                return

    return script


def test_worker_noop_stream_bounded(fake_server):
    server = fake_server(confirm_then(noop_every(0.1)))
    worker = make_worker(server)
    thread = threading.Thread(target=worker.work_once, daemon=True)

    thread.start()
    thread.join(WORKER_BOUND + IO_TIMEOUT)
    still_running = thread.is_alive()
    server.close()
    thread.join(10)
    worker.close()

    assert not still_running, f"work_once() still ran after {WORKER_BOUND + IO_TIMEOUT:g} s"


# ---- the admin protocol ------------------------------------------------------------------------


def admin_call(server, request_name: str, io_timeout: float = IO_TIMEOUT):
    """Call AdminClient.status or .workers on ``server`` and return its result."""
    with AdminClient(
        server.address, connect_timeout=CONNECT_TIMEOUT, io_timeout=io_timeout
    ) as admin:
        return getattr(admin, request_name)()


def admin_outcome(server, request_name: str, io_timeout: float = IO_TIMEOUT) -> Outcome:
    return Outcome(lambda: admin_call(server, request_name, io_timeout))


ADMIN_CASES = [
    pytest.param(
        send_and_hold(b"ERR UNKNOWN_COMMAND Unknown+server+command\r\n"), ServerError, id="ERR line"
    ),
    pytest.param(
        send_and_close(b"t\t1\t0\t1\n3 ::1 - : t\n"), ServerUnavailable, id="no end, then close"
    ),
    pytest.param(
        send_and_hold(b"t\t1\t0\t1\n3 ::1 - : t\n"), TimeoutError, id="no end, then silence"
    ),
    pytest.param(send_and_hold(b"x" * 2 * 1024 * 1024), ProtocolError, id="2 MiB line"),
    pytest.param(send_and_hold(encode_response(PacketType.NOOP)), TimeoutError, id="binary packet"),
]


@pytest.mark.parametrize("request_name", ["status", "workers"])
@pytest.mark.parametrize("script, expected", ADMIN_CASES)
def test_admin_hostile_reply(fake_server, hostile_stats, request_name, script, expected):
    server = fake_server(script)

    outcome, peak = traced(lambda: admin_call(server, request_name))
    hostile_stats.record(outcome, peak)

    assert isinstance(outcome.error, expected), repr(outcome.error)
    assert outcome.elapsed < ADMIN_BOUND
    assert peak < MEMORY_BOUND


@pytest.mark.parametrize("request_name", ["status", "workers"])
def test_admin_trickle_bounded(fake_server, hostile_stats, request_name):
    server = fake_server(trickle(b"t\t1\t0\t1\n3 ::1 - : t\n.\n"))

    outcome = admin_outcome(server, request_name, io_timeout=TRICKLE_IO_TIMEOUT)
    hostile_stats.record(outcome)

    assert isinstance(outcome.error, TimeoutError), repr(outcome.error)
    assert outcome.elapsed < TRICKLE_IO_TIMEOUT + SLACK


def test_admin_err_reply_decoded(fake_server):
    server = fake_server(send_and_hold(b"ERR UNKNOWN_COMMAND Unknown+server+command\r\n"))

    outcome = admin_outcome(server, "status")

    assert outcome.error.code == "UNKNOWN_COMMAND"
    assert outcome.error.text == "Unknown server command"


def test_admin_non_utf8_names(fake_server):
    server = fake_server(send_and_hold(b"t\xff\xfe\t1\t0\t1\n.\n"))

    outcome = admin_outcome(server, "status")

    assert outcome.value == [TaskStatus("t\ufffd\ufffd", 1, 0, 1)]


def test_admin_malformed_lines_skipped(fake_server, caplog):
    listing = (
        b"good\t2\t1\t1\n"
        b"short\t1\n"
        b"neg\t-1\t0\t0\n"
        b"\t1\t1\t1\n"
        b"signed\t+1\t0\t0\n"
        b"also good\t0\t0\t3\n"
        b".\n"
    )
    server = fake_server(send_and_hold(listing))

    with caplog.at_level(logging.WARNING, logger="gearman_pool.server_info"):
        outcome = admin_outcome(server, "status")

    assert outcome.value == [TaskStatus("good", 2, 1, 1), TaskStatus("also good", 0, 0, 3)]
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "Skipped 4 malformed status lines" in messages[1]


# Valid status lines, as fast as the socket takes them, never ended by ".". The call uses
# the default io_timeout, as gearman_server_info does. Measured on a shared 2-core VM, the
# listing grows by about 14 MiB per second under tracemalloc (40 MiB per second without).
ADMIN_FLOOD_LINE = b"task\t1\t0\t1\n"
ADMIN_FLOOD_BOUND = 32 * 1024 * 1024


def test_admin_endless_listing_memory(fake_server, fault_report):
    server = fake_server(flood(b"", ADMIN_FLOOD_LINE * 4096))

    outcome, peak = traced(lambda: admin_call(server, "status", io_timeout=DEFAULT_IO_TIMEOUT))
    fault_report.add(
        ScenarioReport(
            "9 admin endless listing",
            seconds=outcome.elapsed,
            notes=(
                f"{type(outcome.error).__name__} after {MAX_LISTING_LINES} lines, before the "
                f"{DEFAULT_IO_TIMEOUT:g} s io_timeout; tracemalloc peak {peak / 2**20:.0f} MiB"
            ),
        )
    )

    assert isinstance(outcome.error, ProtocolError), repr(outcome.error)
    assert f"more than {MAX_LISTING_LINES} lines" in str(outcome.error)
    assert outcome.elapsed < DEFAULT_IO_TIMEOUT + SLACK
    assert peak < ADMIN_FLOOD_BOUND


# ---- properties: arbitrary server byte streams ----------------------------------------------

PROPERTY_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FIELDS = st.sampled_from(
    [b"", TASK, b"H:fake:1", b"exceptions", b"\xff\xfe", b"1", b"-1"]
) | st.binary(max_size=12)


@st.composite
def response_packets(draw) -> bytes:
    packet_type = draw(st.sampled_from(sorted(ARGUMENT_COUNTS)))
    args = [draw(FIELDS).replace(b"\x00", b"") for _ in range(ARGUMENT_COUNTS[packet_type])]
    return encode_response(packet_type, *args)


SERVER_STREAMS = st.lists(
    st.one_of(
        response_packets(),
        st.just(OPTION_RES),
        st.just(JOB_CREATED),
        st.binary(max_size=30),
        st.integers(min_value=0, max_value=2**32 - 1).map(
            lambda size: header(PacketType.WORK_DATA, size)
        ),
    ),
    max_size=8,
).map(b"".join)


@pytest.fixture(scope="module")
def shared_server():
    with FakeServer(send_and_close(b"")) as server:
        yield server


@PROPERTY_SETTINGS
@given(stream=SERVER_STREAMS, hold=st.booleans(), background=st.booleans())
def test_property_client_any_stream(shared_server, hostile_stats, stream, hold, background):
    shared_server.script = send_and_hold(stream) if hold else send_and_close(stream)

    with make_client(shared_server, io_timeout=PROPERTY_IO_TIMEOUT) as client:
        outcome = Outcome(
            lambda: client.submit_job(
                TASK, b"data", background=background, timeout=PROPERTY_IO_TIMEOUT
            )
        )
    hostile_stats.record(outcome)

    assert outcome.error is None or isinstance(outcome.error, GearmanError), repr(outcome.error)
    assert outcome.error is not None or isinstance(outcome.value, JobResult)
    assert outcome.elapsed < 3 * PROPERTY_IO_TIMEOUT + SLACK


@PROPERTY_SETTINGS
@given(stream=SERVER_STREAMS, hold=st.booleans(), confirmed=st.booleans())
def test_property_worker_any_stream(shared_server, hostile_stats, stream, hold, confirmed):
    script = send_and_hold(stream) if hold else send_and_close(stream)
    shared_server.script = confirm_then(script) if confirmed else script
    worker = make_worker(shared_server, io_timeout=PROPERTY_IO_TIMEOUT)

    try:
        outcome = Outcome(worker.work_once)
    finally:
        worker.close()
    hostile_stats.record(outcome)

    assert outcome.error is None, repr(outcome.error)
    assert isinstance(outcome.value, bool)
    assert outcome.elapsed < PROPERTY_IO_TIMEOUT + TICK_INTERVAL + SLACK


ADMIN_LINES = st.lists(
    st.one_of(
        st.binary(max_size=40).map(lambda line: line.replace(b"\n", b"")),
        st.tuples(FIELDS, FIELDS, FIELDS, FIELDS).map(
            lambda fields: b"\t".join(fields).replace(b"\n", b"")
        ),
        st.sampled_from([b".", b"ERR X y", b"3 127.0.0.1 - : t", b"t\t1\t0\t1"]),
    ),
    max_size=8,
)


@PROPERTY_SETTINGS
@given(
    lines=ADMIN_LINES,
    ended=st.booleans(),
    hold=st.booleans(),
    request_name=st.sampled_from(["status", "workers"]),
)
def test_property_admin_any_lines(shared_server, hostile_stats, lines, ended, hold, request_name):
    reply = b"".join(line + b"\n" for line in lines) + (b".\n" if ended else b"")
    shared_server.script = send_and_hold(reply) if hold else send_and_close(reply)

    outcome = admin_outcome(shared_server, request_name, io_timeout=PROPERTY_IO_TIMEOUT)
    hostile_stats.record(outcome)

    assert outcome.error is None or isinstance(outcome.error, REPORT_ERRORS), repr(outcome.error)
    assert outcome.error is not None or isinstance(outcome.value, list)
    assert outcome.elapsed < ADMIN_BOUND
