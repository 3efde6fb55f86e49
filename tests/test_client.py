"""GearmanClient against a real gearmand, with GearmanWorker threads serving the jobs.

Task names carry a fresh uuid because the shared gearmand keeps its queues between tests.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
import uuid
import zlib

import pytest

from gearman_pool.address import ServerAddress
from gearman_pool.connection import AdminConnection
from gearman_pool.errors import JobFailed, JobTimeout, QueueFull, ServerUnavailable
from gearman_pool.protocol import PacketDecoder, PacketType, encode_response
from tests.gearmand import pick_free_port
from tests.helpers import echo_handler, queue_status

# Upper bound for one foreground job in these tests, so that a lost job fails the test
# instead of hanging it.
JOB_TIMEOUT = 20.0
JOIN_TIMEOUT = 10.0


def new_task(label: str) -> bytes:
    return f"test-client-{label}-{uuid.uuid4().hex}".encode()


def patterned(size: int) -> bytes:
    """Return ``size`` bytes that differ per size and contain every byte value."""
    block = size.to_bytes(4, "big") + bytes(range(256))
    return (block * (size // len(block) + 1))[:size]


def test_background_submit_returns_handle(gearman_client, address):
    task = new_task("background")

    result = gearman_client.submit_job(task, b"payload")

    assert result.handle.startswith("H:")
    assert result.background is True
    assert result.result is None
    assert result.server == address
    assert queue_status(address, task) == (1, 0, 0)


def test_background_handles_differ(gearman_client):
    task = new_task("handles")

    first = gearman_client.submit_job(task, b"one")
    second = gearman_client.submit_job(task, b"two")

    assert first.handle != second.handle


def test_foreground_json_non_ascii(gearman_client, address, start_worker):
    task = new_task("json")
    start_worker([address], {task: echo_handler})
    document = {"cs": "Příliš žluťoučký kůň", "ja": "日本語のテキスト", "n": [1, 2.5, None]}
    payload = json.dumps(document, ensure_ascii=False).encode("utf-8")

    result = gearman_client.submit_job(task, payload, background=False, timeout=JOB_TIMEOUT)

    assert result.result == payload
    assert not result.result.endswith(b"\x00")
    assert json.loads(result.result.decode("utf-8")) == document


def test_foreground_embedded_nul(gearman_client, address, start_worker):
    task = new_task("nul")
    start_worker([address], {task: echo_handler})
    payloads = [
        b"\x00",
        b"\x00\x00\x00",
        b"before\x00after",
        b"\x00leading and trailing\x00",
        bytes(range(256)) * 4,
    ]

    for payload in payloads:
        result = gearman_client.submit_job(task, payload, background=False, timeout=JOB_TIMEOUT)

        assert result.result == payload, f"payload {payload[:40]!r}"


def test_foreground_empty_payload(gearman_client, address, start_worker):
    task = new_task("empty")
    start_worker([address], {task: echo_handler})

    result = gearman_client.submit_job(task, b"", background=False, timeout=JOB_TIMEOUT)

    assert result.result == b""


def test_foreground_sizes_around_64k(gearman_client, address, start_worker):
    task = new_task("sizes")
    start_worker([address], {task: echo_handler})

    for size in range(65_470, 65_541):
        payload = patterned(size)

        result = gearman_client.submit_job(task, payload, background=False, timeout=JOB_TIMEOUT)

        assert len(result.result) == size, f"size {size}"
        assert result.result == payload, f"size {size}"


@pytest.mark.parametrize("size", [1024 * 1024, 2 * 1024 * 1024], ids=["1MiB", "2MiB"])
def test_foreground_large_payload(gearman_client, address, start_worker, size):
    task = new_task("large")
    start_worker([address], {task: echo_handler})
    payload = patterned(size)

    result = gearman_client.submit_job(task, payload, background=False, timeout=JOB_TIMEOUT)

    assert len(result.result) == size
    assert result.result == payload


def test_background_json_reaches_worker(gearman_client, address, start_worker):
    task = new_task("background-json")
    received = queue.Queue()

    def record(job):
        received.put(job)
        return b""

    start_worker([address], {task: record})
    document = {"cs": "Příliš žluťoučký kůň", "ja": "日本語のテキスト"}
    payload = json.dumps(document, ensure_ascii=False).encode("utf-8")

    result = gearman_client.submit_job(task, payload, unique=b"json-unique-key")
    job = received.get(timeout=JOB_TIMEOUT)

    assert job.data == payload
    assert job.task == task
    assert job.unique == b"json-unique-key"
    assert job.handle.decode() == result.handle


def test_handler_exception_then_good_job(gearman_client, address, start_worker):
    task = new_task("exception")

    def handler(job):
        if job.data == b"fail":
            raise ValueError("bad input 42")
        return b"ok:" + job.data

    start_worker([address], {task: handler})

    with pytest.raises(JobFailed) as info:
        gearman_client.submit_job(task, b"fail", background=False, timeout=JOB_TIMEOUT)

    assert "bad input 42" in info.value.message
    assert "ValueError" in info.value.message
    assert "bad input 42" in str(info.value)
    assert info.value.task == task.decode()
    assert info.value.handle.startswith("H:")

    result = gearman_client.submit_job(task, b"good", background=False, timeout=JOB_TIMEOUT)

    assert result.result == b"ok:good"


def test_job_timeout_then_next_submit(gearman_client, address, start_worker):
    idle_task = new_task("unserved")
    served_task = new_task("served")
    start_worker([address], {served_task: echo_handler})

    started = time.monotonic()
    with pytest.raises(JobTimeout) as info:
        gearman_client.submit_job(idle_task, b"never", background=False, timeout=0.5)
    elapsed = time.monotonic() - started

    assert 0.5 <= elapsed < 3.0
    assert "0.5 s" in str(info.value)
    assert isinstance(info.value, TimeoutError)

    result = gearman_client.submit_job(served_task, b"next", background=False, timeout=JOB_TIMEOUT)

    assert result.result == b"next"


def test_priorities_foreground(gearman_client, address, start_worker):
    task = new_task("priority-foreground")
    start_worker([address], {task: echo_handler})

    for priority in ("high", "normal", "low"):
        result = gearman_client.submit_job(
            task, priority.encode(), background=False, priority=priority, timeout=JOB_TIMEOUT
        )

        assert result.result == priority.encode()


def test_priorities_order_queue(gearman_client, address, start_worker):
    task = new_task("priority-order")
    for priority in ("low", "normal", "high"):
        gearman_client.submit_job(task, priority.encode(), priority=priority)
    assert queue_status(address, task) == (3, 0, 0)
    order = []

    def record(job):
        order.append(job.data)
        return b""

    thread = start_worker([address], {task: record}, max_jobs=3)
    thread.join(JOIN_TIMEOUT)

    assert thread.jobs_done == 3
    assert order == [b"high", b"normal", b"low"]


def test_invalid_priority(gearman_client):
    with pytest.raises(ValueError, match="invalid priority 'urgent'"):
        gearman_client.submit_job(new_task("bad"), b"", priority="urgent")


@pytest.mark.parametrize("task", ["text-task", b"", b"bad\x00task"])
def test_invalid_task_name(gearman_client, task):
    with pytest.raises(ValueError, match="invalid task name"):
        gearman_client.submit_job(task, b"")


def test_text_data_rejected(gearman_client):
    with pytest.raises(TypeError, match="job data must be bytes, got str"):
        gearman_client.submit_job(new_task("text"), "text")


def test_unique_key_with_nul_rejected(gearman_client):
    with pytest.raises(ValueError, match="invalid unique key"):
        gearman_client.submit_job(new_task("unique"), b"", unique=b"bad\x00key")


def test_unique_coalesces_queued_jobs(gearman_client, address, start_worker):
    task = new_task("unique")
    key = uuid.uuid4().hex.encode()

    first = gearman_client.submit_job(task, b"first", unique=key)
    second = gearman_client.submit_job(task, b"second", unique=key)

    assert second.handle == first.handle
    assert queue_status(address, task) == (1, 0, 0)

    received = []

    def record(job):
        received.append(job.data)
        return b""

    thread = start_worker([address], {task: record}, max_jobs=1)
    thread.join(JOIN_TIMEOUT)

    assert received == [b"first"]
    assert queue_status(address, task) == (0, 0, 0)


def test_queue_full(make_client, private_gearmand):
    address = ServerAddress.parse(private_gearmand.address)
    client = make_client([address])
    task = new_task("maxqueue")

    # gearmand 1.1.20 applies `maxqueue` only to a function that already has a queue, so
    # the first job must be submitted before the limit is set.
    client.submit_job(task, b"first")
    with AdminConnection(address, io_timeout=5.0) as admin:
        admin.send_line(b"maxqueue " + task + b" 1")
        assert admin.read_line() == b"OK"

    with pytest.raises(QueueFull) as info:
        client.submit_job(task, b"second")

    assert "queue full" in str(info.value)
    assert info.value.address == address
    assert queue_status(address, task) == (1, 0, 0)


def test_unreachable_server_fast(make_client):
    port = pick_free_port()
    client = make_client([ServerAddress("127.0.0.1", port)], connect_timeout=5.0)

    started = time.monotonic()
    with pytest.raises(ServerUnavailable) as info:
        client.submit_job(new_task("unreachable"), b"")
    elapsed = time.monotonic() - started

    assert elapsed < 1.0
    assert f"127.0.0.1:{port}" in str(info.value)


def test_all_servers_unreachable_named(make_client):
    dead = [ServerAddress("127.0.0.1", pick_free_port()) for _ in range(2)]
    client = make_client(dead)

    with pytest.raises(ServerUnavailable) as info:
        client.submit_job(new_task("unreachable"), b"")

    for address in dead:
        assert str(address) in str(info.value)


def test_failover_dead_then_live(make_client, address):
    dead = ServerAddress("127.0.0.1", pick_free_port())
    client = make_client([dead, address])
    task = new_task("failover")
    # A caller-chosen unique key picks the first server by its CRC-32, so this key makes
    # the client try the dead server first.
    key = next(
        candidate
        for candidate in (f"key-{index}".encode() for index in range(100))
        if zlib.crc32(candidate) % 2 == 0
    )

    result = client.submit_job(task, b"data", unique=key)

    assert result.server == address
    assert result.handle.startswith("H:")

    for _ in range(10):
        assert client.submit_job(task, b"data").server == address


def test_reconnect_after_restart(make_client, private_gearmand):
    address = ServerAddress.parse(private_gearmand.address)
    client = make_client([address])
    task = new_task("restart")
    client.submit_job(task, b"before")

    private_gearmand.restart()
    result = client.submit_job(task, b"after")

    assert result.handle.startswith("H:")
    assert queue_status(address, task) == (1, 0, 0)


def test_reconnect_after_restart_foreground(make_client, private_gearmand, start_worker):
    address = ServerAddress.parse(private_gearmand.address)
    client = make_client([address])
    task = new_task("restart-foreground")
    start_worker([address], {task: echo_handler})
    before = client.submit_job(task, b"before", background=False, timeout=JOB_TIMEOUT)
    assert before.result == b"before"

    private_gearmand.restart()
    # The worker needs a moment to reconnect, but the job waits in the queue until it does.
    result = client.submit_job(task, b"after", background=False, timeout=JOB_TIMEOUT)

    assert result.result == b"after"


def test_echo(gearman_client):
    round_trip = gearman_client.echo()

    assert isinstance(round_trip, float)
    assert 0 < round_trip < 1.0


def test_echo_binary_payload(gearman_client):
    assert gearman_client.echo(b"\x00binary\xff\x00") > 0


def test_work_status_data_warning(gearman_client, address, start_worker):
    task = new_task("progress")

    def handler(job):
        job.send_status(1, 2)
        job.send_data(b"part\x00one")
        job.send_warning(b"careful")
        return b"done"

    start_worker([address], {task: handler})

    result = gearman_client.submit_job(task, b"", background=False, timeout=JOB_TIMEOUT)

    assert result.result == b"done"
    assert result.status == (1, 2)
    assert result.data_chunks == [b"part\x00one"]
    assert result.warnings == [b"careful"]


class FakeServer(threading.Thread):
    """A one-connection loopback server that replies to a submit with scripted packets."""

    def __init__(self, replies_after_submit: list[bytes]):
        super().__init__(daemon=True)
        self.replies_after_submit = replies_after_submit
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(JOIN_TIMEOUT)
        self.address = ServerAddress("127.0.0.1", self.listener.getsockname()[1])
        self.requests: list[PacketType] = []

    def run(self):
        connection, _peer = self.listener.accept()
        with connection:
            connection.settimeout(JOIN_TIMEOUT)
            decoder = PacketDecoder(magic=b"\x00REQ")
            while True:
                data = connection.recv(65536)
                if not data:
                    return
                for packet in decoder.feed(data):
                    self.requests.append(packet.type)
                    if packet.type == PacketType.OPTION_REQ:
                        connection.sendall(encode_response(PacketType.OPTION_RES, packet.args[0]))
                    elif packet.type == PacketType.SUBMIT_JOB:
                        connection.sendall(encode_response(PacketType.JOB_CREATED, b"H:vm:2"))
                        connection.sendall(b"".join(self.replies_after_submit))

    def close(self):
        self.listener.close()


def test_work_fail_trailing_nul_fake_server(make_client):
    # gearmand 1.1.20 sends WORK_FAIL with a NUL after the handle when it converts a
    # WORK_EXCEPTION; the client must still match it to its job.
    server = FakeServer(
        [
            encode_response(PacketType.WORK_COMPLETE, b"H:vm:999", b"other job"),
            encode_response(PacketType.WORK_FAIL, b"H:vm:2\x00"),
        ]
    )
    server.start()
    try:
        client = make_client([server.address])

        with pytest.raises(JobFailed) as info:
            client.submit_job(b"task", b"data", background=False, timeout=5.0)

        assert info.value.handle == "H:vm:2"
        assert info.value.message == ""
        client.close()
        server.join(JOIN_TIMEOUT)
        assert server.requests == [PacketType.OPTION_REQ, PacketType.SUBMIT_JOB]
    finally:
        server.close()
