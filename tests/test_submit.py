"""Tests for gearman_pool.submit_job and submit_job_on_commit against the shared gearmand.

Every test uses its own task names, so jobs that stay queued on the shared server cannot
reach another test's worker.
"""

from __future__ import annotations

import time

import pytest
from django.db import transaction
from django.test import override_settings

import gearman_pool
from gearman_pool.address import ServerAddress
from gearman_pool.errors import JobFailed, JobTimeout
from tests.helpers import (
    EchoCommand,
    gearmand_status,
    queued_jobs,
    unique_task,
    wait_until,
    worker_count,
    worker_thread,
)

JOB_TIMEOUT = 10.0


def test_background_submit_returns_handle(gearmand_address):
    task = unique_task("submit-background")

    job = gearman_pool.submit_job(task, {"a": "ž"})

    assert job.background is True
    assert job.handle.startswith("H:")
    assert job.server == ServerAddress.parse(gearmand_address)
    assert job.result is None
    assert queued_jobs(gearmand_address, task) == 1


def test_background_payload_reaches_worker_as_json(gearmand_address):
    task = unique_task("submit-json")
    command = EchoCommand(task, job_data_encoding=None)

    gearman_pool.submit_job(task, {"a": "ž"})
    with worker_thread(command):
        wait_until(lambda: command.received, message="the worker to receive the job")

    assert command.received == ['{"a": "ž"}'.encode()]


def test_foreground_returns_result(gearmand_address):
    task = unique_task("submit-foreground")

    with worker_thread(EchoCommand(task)):
        job = gearman_pool.submit_job(task, "Příliš žluťoučký kůň", background=False, timeout=JOB_TIMEOUT)

    assert job.background is False
    assert job.result == "Příliš žluťoučký kůň".encode()
    assert job.handle.startswith("H:")


@pytest.mark.parametrize(
    "data, expected",
    [(None, b""), (b"\x00\xff", b"\x00\xff"), ("日本語", "日本語".encode()), ([1, "ž"], '[1, "ž"]'.encode())],
)
def test_foreground_encodes_data(data, expected):
    task = unique_task("submit-data")

    with worker_thread(EchoCommand(task, job_data_encoding=None)):
        job = gearman_pool.submit_job(task, data, background=False, timeout=JOB_TIMEOUT)

    assert job.result == expected


def test_foreground_failure_raises_job_failed():
    task = unique_task("submit-raise")

    with worker_thread(EchoCommand(task)), pytest.raises(JobFailed) as excinfo:
        gearman_pool.submit_job(task, "raise", background=False, timeout=JOB_TIMEOUT)

    assert "asked to raise" in excinfo.value.message
    assert "ValueError" in excinfo.value.message


def test_foreground_timeout_raises_job_timeout():
    task = unique_task("submit-no-worker")
    started = time.monotonic()

    with pytest.raises(JobTimeout):
        gearman_pool.submit_job(task, "x", background=False, timeout=0.5)

    assert time.monotonic() - started < 5


def test_namespace_applies_to_worker_and_submit(gearmand_address):
    task = unique_task("submit-ns")
    namespace = unique_task("ns")
    namespaced_task = f"{task}@{namespace}"

    with override_settings(GEARMAN_CLIENT_NAMESPACE=namespace):
        with worker_thread(EchoCommand(task)) as worker:
            assert list(worker.handlers) == [namespaced_task.encode()]
            wait_until(
                lambda: worker_count(gearmand_address, namespaced_task) == 1,
                message=f"gearmand to list a worker for {namespaced_task!r}",
            )
            status = gearmand_status(gearmand_address)
            assert task not in status

            job = gearman_pool.submit_job(task, "hello", background=False, timeout=JOB_TIMEOUT)

    assert job.result == b"hello"
    assert task not in gearmand_status(gearmand_address)


def test_namespace_applies_to_background_submit(gearmand_address):
    task = unique_task("submit-ns-background")
    namespace = unique_task("ns")

    with override_settings(GEARMAN_CLIENT_NAMESPACE=namespace):
        gearman_pool.submit_job(task, "queued")

    status = gearmand_status(gearmand_address)
    assert status[f"{task}@{namespace}"][0] == 1
    assert task not in status


@pytest.mark.django_db(transaction=True)
def test_on_commit_rollback_submits_nothing(gearmand_address):
    task = unique_task("on-commit-rollback")

    with pytest.raises(RuntimeError, match="roll back"), transaction.atomic():
        gearman_pool.submit_job_on_commit(task, "never")
        raise RuntimeError("roll back")

    # A later submit of the same task shows that gearmand's status is current.
    gearman_pool.submit_job(task, "control")
    assert queued_jobs(gearmand_address, task) == 1


@pytest.mark.django_db(transaction=True)
def test_on_commit_submits_once_after_commit(gearmand_address):
    task = unique_task("on-commit")

    with transaction.atomic():
        gearman_pool.submit_job_on_commit(task, {"invoice": 7})
        assert queued_jobs(gearmand_address, task) == 0

    assert queued_jobs(gearmand_address, task) == 1


@pytest.mark.django_db(transaction=True)
def test_on_commit_inner_rollback_keeps_outer_job(gearmand_address):
    task = unique_task("on-commit-nested")

    with transaction.atomic():
        gearman_pool.submit_job_on_commit(task, "outer")
        with pytest.raises(RuntimeError), transaction.atomic():
            gearman_pool.submit_job_on_commit(task, "inner")
            raise RuntimeError("roll back the savepoint")

    assert queued_jobs(gearmand_address, task) == 1


@pytest.mark.django_db(transaction=True)
def test_on_commit_in_autocommit_submits_at_once(gearmand_address):
    task = unique_task("on-commit-autocommit")

    gearman_pool.submit_job_on_commit(task, "now")

    assert queued_jobs(gearmand_address, task) == 1


@pytest.mark.django_db(transaction=True)
def test_on_commit_payload_is_encoded_at_call(gearmand_address):
    task = unique_task("on-commit-payload")
    command = EchoCommand(task, job_data_encoding=None)
    payload = {"items": ["first"]}

    with transaction.atomic():
        gearman_pool.submit_job_on_commit(task, payload)
        payload["items"].append("changed after the call")

    with worker_thread(command):
        wait_until(lambda: command.received, message="the worker to receive the job")

    assert command.received == [b'{"items": ["first"]}']
