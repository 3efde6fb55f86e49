"""GearmanWorker against a real gearmand: stopping, reconnecting, failures and descriptors.

Task names carry a fresh uuid because the shared gearmand keeps its queues between tests.
Some tests read the worker's private connection list (``_servers``) and wake-up pipe,
because the descriptors and the sleeping state cannot be observed from outside.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from gearman_pool.address import ServerAddress
from gearman_pool.client import GearmanClient
from gearman_pool.errors import JobFailed
from gearman_pool.protocol import REQUEST_MAGIC, PacketDecoder, PacketType, encode_request, encode_response
from gearman_pool.worker import GearmanWorker
from tests.gearmand import pick_free_port
from tests.helpers import admin_command, echo_handler, queue_status, wait_until

JOB_TIMEOUT = 20.0
JOIN_TIMEOUT = 10.0
REGISTER_TIMEOUT = 10.0
DESCRIPTOR_COUNT = 1100


def new_task(label: str) -> bytes:
    return f"test-worker-{label}-{uuid.uuid4().hex}".encode()


def new_client_id(label: str) -> str:
    return f"test-worker-{label}-{uuid.uuid4().hex[:12]}"


def is_registered(address: ServerAddress, client_id: str, task: bytes) -> bool:
    """Return whether the admin `workers` list shows ``client_id`` with ``task``.

    A line reads "FD IP CLIENT-ID : TASK TASK ...".
    """
    try:
        lines = admin_command(address, b"workers")
    except (OSError, TimeoutError):
        return False
    for line in lines:
        worker, _, tasks = line.partition(b" : ")
        fields = worker.split()
        if len(fields) == 3 and fields[2] == client_id.encode() and task in tasks.split():
            return True
    return False


def wait_registered(address: ServerAddress, client_id: str, task: bytes, timeout=REGISTER_TIMEOUT):
    wait_until(
        lambda: is_registered(address, client_id, task),
        timeout=timeout,
        message=f"worker {client_id} to register {task!r} at {address}",
    )


def wait_sleeping(worker: GearmanWorker, timeout=REGISTER_TIMEOUT):
    wait_until(
        lambda: all(state.registered and state.sleeping for state in worker._servers),
        timeout=timeout,
        message="the worker to sleep on every server",
    )


def timed_submit(client: GearmanClient, task: bytes, data: bytes) -> tuple[bytes, float]:
    """Submit a foreground job and return its result and the seconds it took."""
    started = time.monotonic()
    result = client.submit_job(task, data, background=False, timeout=JOB_TIMEOUT)
    return result.result, time.monotonic() - started


def test_request_stop_idle_within_half_second(address, start_worker):
    task = new_task("stop-idle")
    client_id = new_client_id("stop-idle")
    # The tick is long, so only the wake-up pipe can end the wait in time.
    thread = start_worker([address], {task: echo_handler}, client_id=client_id, tick_interval=30.0)
    wait_registered(address, client_id, task)
    wait_sleeping(thread.worker)

    started = time.monotonic()
    thread.worker.request_stop()
    thread.join(JOIN_TIMEOUT)
    elapsed = time.monotonic() - started

    assert not thread.is_alive()
    assert elapsed < 0.5
    assert thread.jobs_done == 0
    assert thread.worker.stop_requested


def test_request_stop_during_job(address, gearman_client, start_worker):
    task = new_task("stop-busy")
    job_started = threading.Event()
    finish_job = threading.Event()

    def slow_handler(job):
        job_started.set()
        assert finish_job.wait(JOB_TIMEOUT)
        return b"finished:" + job.data

    thread = start_worker([address], {task: slow_handler}, tick_interval=30.0)
    results = []

    def submit():
        results.append(gearman_client.submit_job(task, b"x", background=False, timeout=JOB_TIMEOUT))

    submitter = threading.Thread(target=submit, daemon=True)
    submitter.start()

    assert job_started.wait(JOB_TIMEOUT)
    thread.worker.request_stop()
    assert thread.is_alive()
    finish_job.set()
    submitter.join(JOB_TIMEOUT)
    thread.join(JOIN_TIMEOUT)

    assert [result.result for result in results] == [b"finished:x"]
    assert not thread.is_alive()
    assert thread.jobs_done == 1


def test_work_max_jobs_one(address, gearman_client, start_worker):
    task = new_task("max-jobs")
    gearman_client.submit_job(task, b"first")
    gearman_client.submit_job(task, b"second")
    received = []

    def record(job):
        received.append(job.data)
        return b""

    thread = start_worker([address], {task: record}, max_jobs=1, tick_interval=30.0)
    thread.join(JOIN_TIMEOUT)

    assert not thread.is_alive()
    assert thread.jobs_done == 1
    assert received == [b"first"]
    assert queue_status(address, task) == (1, 0, 0)

    drain = start_worker([address], {task: record}, max_jobs=1)
    drain.join(JOIN_TIMEOUT)

    assert received == [b"first", b"second"]


def test_jobs_done_counts(address, gearman_client, start_worker):
    task = new_task("count")
    thread = start_worker([address], {task: echo_handler})

    for index in range(5):
        gearman_client.submit_job(task, str(index).encode(), background=False, timeout=JOB_TIMEOUT)

    # The worker counts a job after it sends the result, so the count can lag the client.
    wait_until(
        lambda: thread.worker.jobs_done == 5, timeout=JOIN_TIMEOUT, message="jobs_done to reach 5"
    )
    assert thread.worker.jobs_done == 5


@pytest.mark.slow
def test_idle_worker_wakes_on_noop(address, gearman_client, start_worker):
    task = new_task("noop")
    client_id = new_client_id("noop")
    thread = start_worker([address], {task: echo_handler}, client_id=client_id)
    wait_registered(address, client_id, task)
    wait_sleeping(thread.worker)

    time.sleep(90)
    assert thread.is_alive()
    result, elapsed = timed_submit(gearman_client, task, b"after 90 s")

    assert result == b"after 90 s"
    assert elapsed < 1.0


def test_reregisters_after_gearmand_outage(make_client, private_gearmand, start_worker):
    address = ServerAddress.parse(private_gearmand.address)
    task = new_task("outage")
    client_id = new_client_id("outage")
    start_worker([address], {task: echo_handler}, client_id=client_id)
    wait_registered(address, client_id, task)

    # start() without a new port reuses the stopped server's port.
    private_gearmand.stop()
    time.sleep(5)
    private_gearmand.start()

    assert private_gearmand.address == str(address)
    wait_registered(address, client_id, task, timeout=15.0)
    result, elapsed = timed_submit(make_client([address]), task, b"after outage")

    assert result == b"after outage"
    assert elapsed < 3.0


def test_two_servers_one_down(make_client, gearmand_factory, start_worker):
    first_server = gearmand_factory()
    second_server = gearmand_factory()
    first = ServerAddress.parse(first_server.address)
    second = ServerAddress.parse(second_server.address)
    task = new_task("two-servers")
    client_id = new_client_id("two-servers")
    start_worker([first, second], {task: echo_handler}, client_id=client_id)
    wait_registered(first, client_id, task)
    wait_registered(second, client_id, task)
    first_client = make_client([first])
    second_client = make_client([second])

    second_server.stop()

    # Jobs keep flowing from the first server while the worker retries the second.
    deadline = time.monotonic() + 2.0
    count = 0
    while time.monotonic() < deadline:
        result, elapsed = timed_submit(first_client, task, f"job {count}".encode())
        assert result == f"job {count}".encode()
        assert elapsed < 1.0
        count += 1
        time.sleep(0.1)

    second_server.start()
    wait_registered(second, client_id, task, timeout=15.0)
    result, elapsed = timed_submit(second_client, task, b"second is back")

    assert result == b"second is back"
    assert elapsed < 3.0


def test_dead_server_does_not_block_live(address, gearman_client, start_worker):
    task = new_task("dead-and-live")
    dead = ServerAddress("127.0.0.1", pick_free_port())
    start_worker([dead, address], {task: echo_handler})

    for index in range(3):
        result, elapsed = timed_submit(gearman_client, task, str(index).encode())

        assert result == str(index).encode()
        assert elapsed < 2.0


@pytest.mark.parametrize("value", [42, "text", {"key": "value"}], ids=["int", "str", "dict"])
def test_non_bytes_result_fails_job(address, gearman_client, start_worker, value):
    task = new_task("non-bytes")

    def handler(job):
        if job.data == b"bad":
            return value
        return b"ok"

    start_worker([address], {task: handler})

    with pytest.raises(JobFailed) as info:
        gearman_client.submit_job(task, b"bad", background=False, timeout=JOB_TIMEOUT)

    assert "TypeError" in info.value.message
    assert type(value).__name__ in info.value.message

    result = gearman_client.submit_job(task, b"good", background=False, timeout=JOB_TIMEOUT)

    assert result.result == b"ok"


def test_none_result_is_empty(address, gearman_client, start_worker):
    task = new_task("none")
    start_worker([address], {task: lambda job: None})

    result = gearman_client.submit_job(task, b"data", background=False, timeout=JOB_TIMEOUT)

    assert result.result == b""


def test_bytearray_result(address, gearman_client, start_worker):
    task = new_task("bytearray")
    start_worker([address], {task: lambda job: bytearray(job.data)})

    result = gearman_client.submit_job(task, b"\x00data\x00", background=False, timeout=JOB_TIMEOUT)

    assert result.result == b"\x00data\x00"


def test_keep_running_false_stops_within_tick(address, start_worker):
    task = new_task("keep-running")
    client_id = new_client_id("keep-running")
    running = threading.Event()
    running.set()
    tick = 0.3
    thread = start_worker(
        [address],
        {task: echo_handler},
        client_id=client_id,
        keep_running=running.is_set,
        tick_interval=tick,
    )
    wait_registered(address, client_id, task)
    wait_sleeping(thread.worker)

    started = time.monotonic()
    running.clear()
    thread.join(JOIN_TIMEOUT)
    elapsed = time.monotonic() - started

    assert not thread.is_alive()
    assert elapsed < tick + 0.3
    assert thread.worker.stop_requested


def test_keep_running_checked_between_jobs(address, gearman_client, start_worker):
    task = new_task("keep-running-jobs")
    calls_left = [3]

    def keep_running():
        return calls_left[0] > 0

    def handler(job):
        calls_left[0] -= 1
        return job.data

    thread = start_worker([address], {task: handler}, keep_running=keep_running)
    for index in range(3):
        gearman_client.submit_job(task, str(index).encode(), background=False, timeout=JOB_TIMEOUT)
    thread.join(JOIN_TIMEOUT)

    assert not thread.is_alive()
    assert thread.jobs_done == 3


def worker_descriptors(worker: GearmanWorker) -> dict[str, int]:
    descriptors = {
        "wake-up pipe read end": worker._wakeup_read,
        "wake-up pipe write end": worker._wakeup_write,
    }
    for state in worker._servers:
        descriptors[f"socket to {state.connection.address}"] = state.connection.fileno()
    return descriptors


def test_descriptors_close_on_exec(address, start_worker):
    task = new_task("cloexec")
    client_id = new_client_id("cloexec")
    thread = start_worker([address], {task: echo_handler}, client_id=client_id)
    wait_registered(address, client_id, task)
    wait_sleeping(thread.worker)
    descriptors = worker_descriptors(thread.worker)

    for name, fd in descriptors.items():
        assert not os.get_inheritable(fd), f"{name} (fd {fd}) is inheritable"
        flags = fcntl.fcntl(fd, fcntl.F_GETFD)
        assert flags & fcntl.FD_CLOEXEC, f"{name} (fd {fd}) lacks FD_CLOEXEC"

    # A child started without close_fds must not have the same open files at those numbers.
    parent_files = {fd: [os.fstat(fd).st_dev, os.fstat(fd).st_ino] for fd in descriptors.values()}
    probe = (
        "import json, os, sys\n"
        "found = {}\n"
        "for fd in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        st = os.fstat(fd)\n"
        "    except OSError:\n"
        "        continue\n"
        "    found[fd] = [st.st_dev, st.st_ino]\n"
        "print(json.dumps(found))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(list(parent_files))],
        close_fds=False,
        capture_output=True,
        text=True,
        check=True,
        timeout=JOB_TIMEOUT,
    ).stdout
    child_files = {int(fd): identity for fd, identity in json.loads(output).items()}

    for fd, identity in parent_files.items():
        assert child_files.get(fd) != identity, f"child process inherited fd {fd}"


@pytest.fixture
def many_descriptors():
    """Open DESCRIPTOR_COUNT extra descriptors, raising RLIMIT_NOFILE's soft limit if needed."""
    needed = DESCRIPTOR_COUNT + 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(
                f"RLIMIT_NOFILE hard limit {hard} is below the {needed} descriptors this test needs"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))

    base = os.open(os.devnull, os.O_RDONLY)
    extra = []
    try:
        for _ in range(DESCRIPTOR_COUNT):
            extra.append(os.dup(base))
        yield extra
    finally:
        for fd in extra:
            os.close(fd)
        os.close(base)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_more_than_1024_descriptors(address, make_client, start_worker, many_descriptors):
    assert max(many_descriptors) > 1024
    task = new_task("many-fds")
    client_id = new_client_id("many-fds")
    client = make_client([address])
    thread = start_worker([address], {task: echo_handler}, client_id=client_id, tick_interval=30.0)
    wait_registered(address, client_id, task)
    wait_sleeping(thread.worker)

    for name, fd in worker_descriptors(thread.worker).items():
        assert fd > 1024, f"{name} got fd {fd}, so the test does not cover descriptors above 1024"

    result, elapsed = timed_submit(client, task, b"high descriptors")

    assert result == b"high descriptors"
    assert elapsed < 2.0

    wait_sleeping(thread.worker)
    started = time.monotonic()
    thread.worker.request_stop()
    thread.join(JOIN_TIMEOUT)

    assert not thread.is_alive()
    assert time.monotonic() - started < 0.5


def test_on_registered_waits_for_echo_reply(start_worker):
    """on_registered runs only after the server replied to the ECHO_REQ sent after CAN_DO.

    A scripted server delays its ECHO_RES. Until it sends it, the callback must not
    run, because gearmand would not count the worker yet.
    """
    task = new_task("echo-confirm")
    registered = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = ServerAddress("127.0.0.1", listener.getsockname()[1])
        start_worker(
            [address],
            {task: echo_handler},
            on_registered=lambda _address: registered.set(),
            tick_interval=0.2,
        )
        listener.settimeout(REGISTER_TIMEOUT)
        server_side, _ = listener.accept()
        with server_side:
            decoder = PacketDecoder(magic=REQUEST_MAGIC)
            received: list = []
            server_side.settimeout(REGISTER_TIMEOUT)
            while not any(packet.type == PacketType.ECHO_REQ for packet in received):
                received.extend(decoder.feed(server_side.recv(4096)))
            types = [packet.type for packet in received]
            echo = received[-1]

            assert types.index(PacketType.CAN_DO) < types.index(PacketType.ECHO_REQ)
            assert not registered.wait(0.5)

            server_side.sendall(encode_response(PacketType.ECHO_RES, *echo.args))

            assert registered.wait(REGISTER_TIMEOUT)


def test_gearmand_counts_worker_when_on_registered_runs(address, start_worker):
    task = new_task("counted")
    client_id = new_client_id("counted")
    seen = []
    done = threading.Event()

    def on_registered(_address):
        seen.append(is_registered(address, client_id, task))
        done.set()

    start_worker([address], {task: echo_handler}, client_id=client_id, on_registered=on_registered)

    assert done.wait(REGISTER_TIMEOUT)
    assert seen == [True]


def test_stop_during_registration_wait(start_worker):
    """A stop request ends the wait for gearmand's reply to ECHO_REQ at once."""
    task = new_task("silent")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = ServerAddress("127.0.0.1", listener.getsockname()[1])
        thread = start_worker([address], {task: echo_handler}, io_timeout=30.0)
        listener.settimeout(REGISTER_TIMEOUT)
        server_side, _ = listener.accept()
        with server_side:
            # The server reads the registration and never replies.
            server_side.settimeout(REGISTER_TIMEOUT)
            received = b""
            while encode_request(PacketType.ECHO_REQ, b"")[:8] not in received:
                received += server_side.recv(4096)
            started = time.monotonic()
            thread.worker.request_stop()
            thread.join(JOIN_TIMEOUT)

            assert not thread.is_alive()
            assert time.monotonic() - started < 0.5
