"""Submitting jobs from Python code: views, signals, scripts."""

from __future__ import annotations

from gearman_pool.client import GearmanClient, JobResult
from gearman_pool.conf import gearman_settings
from gearman_pool.encoding import encode_value

# Encoder of job data, kept under this name because callers import it from here.
encode_job_data = encode_value


def submit_job(
    task_name: str,
    data=None,
    *,
    background: bool = True,
    priority: str = "normal",
    unique: str | None = None,
    timeout: float | None = None,
    servers=None,
) -> JobResult:
    """Submit a job of ``task_name`` and return its JobResult.

    In the background (the default) this returns once gearmand has queued the job. With
    ``background=False`` it waits up to ``timeout`` seconds (None: no limit) and the
    result's ``result`` attribute contains the bytes the worker returned. The task name
    gets the GEARMAN_CLIENT_NAMESPACE suffix. Raises the errors of
    ``GearmanClient.submit_job``: JobFailed, JobTimeout, QueueFull, ServerError and
    ServerUnavailable.
    """
    addresses = gearman_settings.servers if servers is None else servers
    task = gearman_settings.namespaced(task_name).encode("utf-8")
    with GearmanClient(addresses, connect_timeout=gearman_settings.connect_timeout) as client:
        return client.submit_job(
            task,
            encode_job_data(data),
            background=background,
            priority=priority,
            unique=None if unique is None else unique.encode("utf-8"),
            timeout=timeout,
        )


def submit_job_on_commit(task_name: str, data=None, *, using: str | None = None, **options) -> None:
    """Submit a background job once the current database transaction commits.

    Outside a transaction (autocommit) the job is submitted at once. When the
    transaction rolls back, no job is submitted. A submit that fails after the commit
    raises from the commit, so the caller sees it rather than losing the job silently.
    """
    from django.db import transaction

    data_bytes = encode_job_data(data)
    transaction.on_commit(lambda: submit_job(task_name, data_bytes, **options), using=using)
