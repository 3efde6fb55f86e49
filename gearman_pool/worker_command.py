"""GearmanWorkerBaseCommand: the base class of ``gearman_worker_<task>`` commands."""

from __future__ import annotations

import logging
import os
import signal

from django.core.management.base import BaseCommand, CommandError

from gearman_pool.conf import gearman_settings
from gearman_pool.errors import InvalidServerAddress
from gearman_pool.jobs import InvalidWorkerCommand, build_worker
from gearman_pool.logs import ensure_log_handler

logger = logging.getLogger(__name__)

# The exit status after a second SIGINT or SIGTERM abandoned the job in hand, as a shell
# reports a process ended by SIGINT.
EXIT_INTERRUPTED = 130


class GearmanWorkerBaseCommand(BaseCommand):
    """Base class for a Django command that serves one Gearman task.

    A subclass lives in ``<app>/management/commands/gearman_worker_<task>.py``, sets
    ``task_name`` (a class attribute, or a property as in 0.x) and implements
    ``do_job(job_data)``. ``gearman_pool`` finds such commands by their name prefix.

    - ``job_data`` is None for an empty payload, otherwise the payload decoded with
      ``job_data_encoding`` ("utf-8"); set ``job_data_encoding = None`` for raw bytes.
    - What ``do_job`` returns becomes the job's result: str as UTF-8, bytes as they are,
      None as an empty result, anything else as JSON.
    - An exception in ``do_job`` is logged once and reported to the client as a
      failure carrying the exception text. The worker then serves the next job.
    - ``exit_after_job = True`` (or ``--exit-after-job``) stops after one job.
    - ``prepare_worker()`` runs once in the serving process before it registers.
    """

    help = "Serve this Gearman task in one process until SIGTERM or SIGINT."
    task_name: str | None = None
    job_data_encoding: str | None = "utf-8"
    exit_after_job = False

    def prepare_worker(self):
        """Hook called once in the serving process before it registers at gearmand.

        In a pool that is each child, right after fork(): the place to open per-process
        resources. An exception here is a boot failure, which the pool backs off from.
        """

    def do_job(self, job_data):
        raise NotImplementedError(f"{type(self).__module__} must implement do_job(job_data)")

    def add_arguments(self, parser):
        parser.add_argument(
            "--exit-after-job",
            action="store_true",
            help="Exit after one job instead of serving until stopped.",
        )

    def handle(self, *args, **options):
        try:
            servers = gearman_settings.servers
            worker = build_worker([self])
        except (InvalidServerAddress, InvalidWorkerCommand) as exc:
            raise CommandError(str(exc)) from None
        ensure_log_handler()
        self.prepare_worker()
        max_jobs = 1 if options["exit_after_job"] or self.exit_after_job else None
        task = next(iter(worker.handlers)).decode()

        signal_count = 0

        def request_stop(signum, frame):
            # Only records the request: the first signal lets the job in hand finish,
            # a second one abandons it (gearmand then requeues the job).
            nonlocal signal_count
            signal_count += 1
            worker.request_stop()
            if signal_count > 1:
                raise KeyboardInterrupt

        previous = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGTERM, signal.SIGINT)}
        logger.info(
            "Worker for task %r started (pid %s, servers %s)",
            task,
            os.getpid(),
            ", ".join(str(address) for address in servers),
        )
        try:
            worker.work(max_jobs=max_jobs)
        except KeyboardInterrupt:
            job = worker.current_job
            abandoned = f"job {job.handle.decode('utf-8', 'replace')}" if job is not None else "the job in hand"
            raise CommandError(
                f"worker for task {task!r} interrupted by a second signal; gearmand requeues {abandoned}",
                returncode=EXIT_INTERRUPTED,
            ) from None
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            worker.close()
        logger.info("Worker for task %r stopped; jobs done: %d (pid %s)", task, worker.jobs_done, os.getpid())
