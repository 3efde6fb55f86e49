"""Unit tests for gearman_pool.jobs: payload decoding, result encoding and task names.

No job server is needed: the jobs are built by hand with connection=None.
"""

import datetime
import decimal
import json
from unittest import mock

import pytest
from django.db.backends.signals import connection_created
from django.test import override_settings

from gearman_pool.jobs import (
    _ConnectionTracker,
    InvalidWorkerCommand,
    JobRunner,
    build_job_runner,
    build_worker,
    encode_result,
    resolve_task_name,
)
from gearman_pool.worker import Job


def make_job(data: bytes) -> Job:
    return Job(handle=b"H:test:1", task=b"echo", unique=b"unique-1", data=data, connection=None)


class RecordingCommand:
    """Fake worker command that stores each job_data it receives and returns `result`."""

    def __init__(self, task_name="echo", result="done", job_data_encoding="utf-8"):
        self.task_name = task_name
        self.result = result
        self.job_data_encoding = job_data_encoding
        self.received = []

    def do_job(self, job_data):
        self.received.append(job_data)
        return self.result


class PropertyCommand:
    """A 0.x worker command: task_name is a property."""

    @property
    def task_name(self):
        return "legacy"

    def do_job(self, job_data):
        return job_data


def test_runner_decodes_utf8():
    command = RecordingCommand()
    runner = JobRunner("echo", command.do_job)

    runner(make_job("Příliš žluťoučký kůň 日本語".encode()))

    assert command.received == ["Příliš žluťoučký kůň 日本語"]


@pytest.mark.parametrize("encoding", ["utf-8", None])
def test_runner_passes_none_for_empty_payload(encoding):
    command = RecordingCommand()
    runner = JobRunner("echo", command.do_job, job_data_encoding=encoding)

    runner(make_job(b""))

    assert command.received == [None]


def test_runner_passes_raw_bytes_without_encoding():
    command = RecordingCommand()
    runner = JobRunner("raw", command.do_job, job_data_encoding=None)
    payload = b"\x00\xff\xfe\x80 not UTF-8 \xc5"

    runner(make_job(payload))

    assert command.received == [payload]
    assert isinstance(command.received[0], bytes)


def test_runner_decodes_other_encoding():
    command = RecordingCommand()
    runner = JobRunner("echo", command.do_job, job_data_encoding="latin-1")

    runner(make_job(b"caf\xe9"))

    assert command.received == ["café"]


def test_runner_rejects_invalid_utf8():
    command = RecordingCommand()
    runner = JobRunner("echo", command.do_job)

    with pytest.raises(UnicodeDecodeError):
        runner(make_job(b"ok \xff\xfe"))

    assert command.received == []


@pytest.mark.parametrize(
    "result, expected",
    [
        ("ž text", "ž text".encode()),
        ("", b""),
        (b"\x00\xff raw", b"\x00\xff raw"),
        (bytearray(b"array"), b"array"),
        (memoryview(b"view"), b"view"),
        (None, b""),
        ({"a": "ž", "n": [1, 2.5, None, True]}, '{"a": "ž", "n": [1, 2.5, null, true]}'.encode()),
        ([1, 2], b"[1, 2]"),
        (42, b"42"),
        (decimal.Decimal("1.10"), b'"1.10"'),
        (
            datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc),
            b'"2024-05-06T07:08:09Z"',
        ),
        ({"day": datetime.date(2024, 5, 6)}, b'{"day": "2024-05-06"}'),
    ],
)
def test_encode_result(result, expected):
    encoded = encode_result(result)

    assert encoded == expected
    assert type(encoded) is bytes


def test_runner_returns_encoded_result():
    command = RecordingCommand(result={"total": 3, "name": "ž"})
    runner = JobRunner("echo", command.do_job)

    encoded = runner(make_job(b"x"))

    assert json.loads(encoded.decode("utf-8")) == {"total": 3, "name": "ž"}


@pytest.fixture
def connection_opened(monkeypatch):
    """Mark the process as one that has opened a database connection."""
    monkeypatch.setattr(_ConnectionTracker, "opened", True)


@pytest.fixture
def no_connection_opened(monkeypatch):
    monkeypatch.setattr(_ConnectionTracker, "opened", False)


def test_runner_skips_cleanup_without_connections(no_connection_opened):
    with mock.patch("gearman_pool.jobs.close_old_connections") as close_old_connections:
        JobRunner("echo", lambda job_data: "ok")(make_job(b"x"))

    assert close_old_connections.call_count == 0


def test_connection_created_enables_cleanup(no_connection_opened):
    connection_created.send(sender=object, connection=object())

    assert _ConnectionTracker.opened
    with mock.patch("gearman_pool.jobs.close_old_connections") as close_old_connections:
        JobRunner("echo", lambda job_data: "ok")(make_job(b"x"))

    assert close_old_connections.call_count == 2


@pytest.mark.usefixtures("connection_opened")
def test_runner_closes_old_connections_around_job():
    calls = []

    def do_job(job_data):
        calls.append("do_job")
        return "ok"

    with mock.patch("gearman_pool.jobs.close_old_connections") as close_old_connections:
        close_old_connections.side_effect = lambda: calls.append("close_old_connections")
        JobRunner("echo", do_job)(make_job(b"x"))

    assert calls == ["close_old_connections", "do_job", "close_old_connections"]


@pytest.mark.usefixtures("connection_opened")
def test_runner_closes_old_connections_after_failure():
    def do_job(job_data):
        raise ValueError("job failed")

    with mock.patch("gearman_pool.jobs.close_old_connections") as close_old_connections:
        with pytest.raises(ValueError, match="job failed"):
            JobRunner("echo", do_job)(make_job(b"x"))

    assert close_old_connections.call_count == 2


@pytest.mark.usefixtures("connection_opened")
def test_runner_closes_old_connections_after_unencodable_result():
    command = RecordingCommand(result=object())

    with mock.patch("gearman_pool.jobs.close_old_connections") as close_old_connections:
        with pytest.raises(TypeError):
            JobRunner("echo", command.do_job)(make_job(b"x"))

    assert close_old_connections.call_count == 2


def test_resolve_task_name_class_attribute():
    assert resolve_task_name(RecordingCommand(task_name="send_invoices")) == "send_invoices"


def test_resolve_task_name_property():
    assert resolve_task_name(PropertyCommand()) == "legacy"


@pytest.mark.parametrize("task_name", [None, "", "a b", "tab\tname", "line\nbreak", "nul\x00name", b"echo", 5])
def test_resolve_task_name_rejects_invalid(task_name):
    with pytest.raises(InvalidWorkerCommand) as excinfo:
        resolve_task_name(RecordingCommand(task_name=task_name))

    assert repr(task_name) in str(excinfo.value)


def test_resolve_task_name_missing_attribute():
    class NoTaskName:
        def do_job(self, job_data):
            return None

    with pytest.raises(InvalidWorkerCommand, match="None"):
        resolve_task_name(NoTaskName())


def test_build_job_runner_uses_command_settings():
    command = RecordingCommand(task_name="raw", job_data_encoding=None)

    runner = build_job_runner(command)

    assert runner.task_name == "raw"
    assert runner.job_data_encoding is None
    assert runner.do_job == command.do_job


def test_build_job_runner_defaults_to_utf8():
    runner = build_job_runner(PropertyCommand())

    assert runner.job_data_encoding == "utf-8"
    assert runner.task_name == "legacy"


def test_build_job_runner_rejects_unknown_encoding():
    command = RecordingCommand(job_data_encoding="no-such-codec")

    with pytest.raises(InvalidWorkerCommand) as excinfo:
        build_job_runner(command)

    assert "'no-such-codec'" in str(excinfo.value)


def test_build_job_runner_rejects_invalid_task_name():
    with pytest.raises(InvalidWorkerCommand):
        build_job_runner(RecordingCommand(task_name="a b"))


def test_build_worker_registers_namespaced_tasks():
    commands = [RecordingCommand(task_name="echo"), PropertyCommand()]

    with override_settings(GEARMAN_SERVERS=["127.0.0.1:1"], GEARMAN_CLIENT_NAMESPACE="ns"):
        worker = build_worker(commands)
    try:
        assert sorted(worker.handlers) == [b"echo@ns", b"legacy@ns"]
        assert worker.handlers[b"echo@ns"].task_name == "echo"
    finally:
        worker.close()


def test_build_worker_without_namespace():
    with override_settings(GEARMAN_SERVERS=["127.0.0.1:1"]):
        worker = build_worker([RecordingCommand(task_name="echo")])
    try:
        assert list(worker.handlers) == [b"echo"]
    finally:
        worker.close()
