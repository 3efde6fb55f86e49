"""The bridge between a worker command's ``do_job(job_data)`` and the protocol worker.

The single-process worker command and every pool child run jobs through JobRunner, so
both decode payloads, encode results and handle database connections the same way.
"""

from __future__ import annotations

import logging
import os

from django.db import close_old_connections
from django.db.backends.signals import connection_created

from gearman_pool.conf import gearman_settings
from gearman_pool.encoding import encode_value
from gearman_pool.worker import GearmanWorker, Job

logger = logging.getLogger(__name__)


class InvalidWorkerCommand(ValueError):
    """A worker command whose task_name or encoding settings are unusable."""


# Encoder of ``do_job`` results, kept under this name because callers import it from here.
encode_result = encode_value


class _ConnectionTracker:
    """Whether this process has opened a database connection since it started.

    Until it has, close_old_connections() has nothing to close, and skipping it saves a
    few microseconds per job, which is much of a no-op job's cost.
    """

    opened = False

    @classmethod
    def note_connection(cls, sender, connection, **kwargs) -> None:
        cls.opened = True


connection_created.connect(_ConnectionTracker.note_connection, dispatch_uid="gearman_pool.jobs.connections")


class JobRunner:
    """Callable handler that runs one job through ``do_job``.

    ``job_data_encoding`` decodes the payload (None passes raw bytes); an empty payload
    becomes None either way, as in 0.x. Once the process has opened a database
    connection, connections are cleaned before and after each job with
    ``close_old_connections``, as Django does around a request, so CONN_MAX_AGE and
    CONN_HEALTH_CHECKS apply and a connection the database dropped while the worker was
    idle is replaced.
    """

    def __init__(self, task_name: str, do_job, job_data_encoding: str | None = "utf-8"):
        self.task_name = task_name
        self.do_job = do_job
        self.job_data_encoding = job_data_encoding

    def __call__(self, job: Job) -> bytes:
        handle = job.handle.decode("utf-8", "replace")
        logger.debug("Job %s of task %r started (pid %s)", handle, self.task_name, os.getpid())
        if _ConnectionTracker.opened:
            close_old_connections()
        try:
            result = self.do_job(self.decode(job.data))
            encoded = encode_result(result)
        finally:
            if _ConnectionTracker.opened:
                close_old_connections()
        logger.debug("Job %s of task %r completed (pid %s)", handle, self.task_name, os.getpid())
        return encoded

    def decode(self, data: bytes):
        if not data:
            return None
        if self.job_data_encoding is None:
            return data
        return data.decode(self.job_data_encoding)


def resolve_task_name(command) -> str:
    """Return the command's task name, checked; works for attributes and 0.x properties."""
    task_name = getattr(command, "task_name", None)
    command_name = type(command).__module__.rpartition(".")[2]
    if not isinstance(task_name, str) or not task_name:
        raise InvalidWorkerCommand(
            f"worker command {command_name!r} has task_name {task_name!r}; set task_name to a non-empty string"
        )
    if any(char.isspace() or char == "\x00" for char in task_name):
        raise InvalidWorkerCommand(
            f"worker command {command_name!r} has task_name {task_name!r}; a task name cannot contain white space"
        )
    return task_name


def build_job_runner(command) -> JobRunner:
    encoding = getattr(command, "job_data_encoding", "utf-8")
    if encoding is not None:
        try:
            "".encode(encoding)
        except LookupError:
            raise InvalidWorkerCommand(
                f"worker command {type(command).__module__.rpartition('.')[2]!r} has unknown "
                f"job_data_encoding {encoding!r}; use a Python codec name or None for raw bytes"
            ) from None
    return JobRunner(resolve_task_name(command), command.do_job, encoding)


def build_worker(commands, **worker_options) -> GearmanWorker:
    """Create a protocol worker serving the tasks of the given worker commands.

    Task names get the GEARMAN_CLIENT_NAMESPACE suffix here, once, for every caller.
    ``worker_options`` go to GearmanWorker (keep_running, client_id, callbacks).
    """
    handlers = {}
    for command in commands:
        runner = build_job_runner(command)
        handlers[gearman_settings.namespaced(runner.task_name).encode("utf-8")] = runner
    return GearmanWorker(
        gearman_settings.servers,
        handlers,
        connect_timeout=gearman_settings.connect_timeout,
        **worker_options,
    )
