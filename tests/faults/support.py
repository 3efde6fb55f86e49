"""Helpers of the fault-injection tests: the completion table, job streams, pool inspection.

Every job of these tests is a gearman_worker_fault_record job whose data is a job id. The
worker inserts one row (job_id, pid, finished_at) into the fault_jobs table of the
PostgreSQL database gearman_pool_faults before it sends the result. A test compares the
ids it submitted with the rows: an id without a row is lost, and an id with more than one
row ran more than once (a duplicate).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import re
import threading
import time
import uuid

import psutil
import psycopg

from gearman_pool.address import ServerAddress
from gearman_pool.client import GearmanClient
from gearman_pool.errors import GearmanError, ServerUnavailable
from gearman_pool.server_info import AdminClient
from tests.faults.settings import FAULTS_DATABASE
from tests.helpers import gearmand_status, wait_until

TASK = "fault_record"
TASK_BYTES = TASK.encode()
POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_ADDRESS = f"{POSTGRES_HOST}:{POSTGRES_PORT}"
SETTINGS = "tests.faults.settings"
SETTINGS_DEBUG = "tests.faults.settings_debug"
SETTINGS_LOGFILE = "tests.faults.settings_logfile"

# Seconds a pool may take to register all its children at gearmand.
POOL_START_TIMEOUT = 60.0
# Seconds a drain may take after the last submit. Generous: other test runs share the CPUs.
DRAIN_TIMEOUT = 240.0
# Seconds a pool may take to restore its child count after a fault.
REFILL_TIMEOUT = 60.0

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS fault_jobs (
    job_id text NOT NULL,
    pid integer NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""
# text_pattern_ops lets the LIKE 'prefix%' queries below use the index.
CREATE_INDEX = (
    "CREATE INDEX IF NOT EXISTS fault_jobs_job_id ON fault_jobs (job_id text_pattern_ops)"
)


class FaultDatabase:
    """The completion table.

    Each call opens a connection of its own, so the object keeps working after a restart
    of PostgreSQL.
    """

    def __init__(
        self, host: str = POSTGRES_HOST, port: int = POSTGRES_PORT, name: str = FAULTS_DATABASE
    ):
        self.host = host
        self.port = port
        self.name = name
        # Prefixes handed out by new_prefix(); conftest.py deletes their rows at the end.
        self.prefixes: list[str] = []

    def new_prefix(self, scenario: str) -> str:
        """Return a job id prefix unique to this scenario run: letters, digits and hyphens.

        LIKE treats "_" and "%" as wildcards, so the prefix must not contain them.
        """
        prefix = f"{scenario}-{uuid.uuid4().hex[:10]}-"
        self.prefixes.append(prefix)
        return prefix

    def connect(self, database: str | None = None) -> psycopg.Connection:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user="postgres",
            dbname=database or self.name,
            autocommit=True,
            connect_timeout=5,
        )

    def create(self) -> None:
        """Create the database and the table unless they exist; a concurrent run may too."""
        with self.connect("postgres") as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [self.name]
            ).fetchone()
            if not exists:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    connection.execute(f'CREATE DATABASE "{self.name}"')
        # Two runs that create the table at once can collide on its catalog entry.
        with self.connect() as connection, contextlib.suppress(psycopg.errors.UniqueViolation):
            connection.execute(CREATE_TABLE)
            connection.execute(CREATE_INDEX)

    def runs(self, prefix: str) -> collections.Counter[str]:
        """Return {job_id: number of rows} for the ids that start with ``prefix``."""
        with self.connect() as connection:
            rows = connection.execute(
                "SELECT job_id, count(*) FROM fault_jobs WHERE job_id LIKE %s GROUP BY job_id",
                [prefix + "%"],
            ).fetchall()
        return collections.Counter(dict(rows))

    def pids(self, prefix: str) -> set[int]:
        with self.connect() as connection:
            rows = connection.execute(
                "SELECT DISTINCT pid FROM fault_jobs WHERE job_id LIKE %s", [prefix + "%"]
            )
            return {pid for (pid,) in rows}

    def distinct_count(self, prefix: str) -> int:
        with self.connect() as connection:
            return connection.execute(
                "SELECT count(DISTINCT job_id) FROM fault_jobs WHERE job_id LIKE %s", [prefix + "%"]
            ).fetchone()[0]

    def session_pids(self, application_name: str) -> set[int]:
        """Return the backend pids of the sessions opened with ``application_name``."""
        with self.connect() as connection:
            rows = connection.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [application_name]
            )
            return {pid for (pid,) in rows}

    def delete(self, prefix: str) -> None:
        with self.connect() as connection:
            connection.execute("DELETE FROM fault_jobs WHERE job_id LIKE %s", [prefix + "%"])

    def is_reachable(self) -> bool:
        try:
            with self.connect("postgres") as connection:
                connection.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True


@dataclasses.dataclass
class Tally:
    """Submitted ids compared with the completion table."""

    submitted: int
    completed: int
    lost: list[str]
    duplicates: int
    extra_runs: int

    @classmethod
    def compare(cls, submitted_ids, runs: collections.Counter) -> Tally:
        submitted_ids = list(submitted_ids)
        lost = [job_id for job_id in submitted_ids if runs.get(job_id, 0) == 0]
        ran_twice = [job_id for job_id in submitted_ids if runs.get(job_id, 0) > 1]
        return cls(
            submitted=len(submitted_ids),
            completed=len(submitted_ids) - len(lost),
            lost=lost,
            duplicates=len(ran_twice),
            extra_runs=sum(runs[job_id] - 1 for job_id in ran_twice),
        )


class JobSubmitter(threading.Thread):
    """Submits background jobs of gearman_worker_fault_record with ids ``prefix + n``.

    ``rate`` caps the submits per second (None: as fast as gearmand accepts them). A submit
    that fails with ServerUnavailable, because gearmand is down, goes to ``failed_ids``, and
    the next submit waits ``retry_pause`` seconds. Any other GearmanError goes to
    ``unexpected``.
    """

    def __init__(
        self,
        address: str,
        prefix: str,
        count: int,
        rate: float | None = None,
        retry_pause: float = 0.05,
    ):
        super().__init__(daemon=True, name=f"submitter-{prefix}")
        self.address = ServerAddress.parse(address)
        self.prefix = prefix
        self.count = count
        self.rate = rate
        self.retry_pause = retry_pause
        self.accepted_ids: list[str] = []
        self.failed_ids: list[str] = []
        self.unexpected: list[str] = []

    def run(self) -> None:
        started = time.monotonic()
        with GearmanClient([self.address], connect_timeout=2.0, io_timeout=10.0) as client:
            for number in range(self.count):
                if self.rate is not None:
                    pause = started + number / self.rate - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                job_id = f"{self.prefix}{number:06d}"
                try:
                    client.submit_job(TASK_BYTES, job_id.encode(), background=True)
                except ServerUnavailable:
                    self.failed_ids.append(job_id)
                    time.sleep(self.retry_pause)
                except GearmanError as exc:
                    self.unexpected.append(f"{job_id}: {type(exc).__name__}: {exc}")
                else:
                    self.accepted_ids.append(job_id)


# ---- gearmand and the pool ------------------------------------------------------------


def start_fault_pool(
    spawn_manage, server, counts: dict[str, int], *args: str, settings: str = SETTINGS, env=None
):
    """Start gearman_pool with ``counts`` children per task on the gearmand ``server``."""
    workers = ",".join(f"{task}={count}" for task, count in counts.items())
    return spawn_manage(
        "gearman_pool",
        "--workers",
        workers,
        *args,
        settings=settings,
        env={"GEARMAN_TEST_SERVER": server.address, **(env or {})},
    )


def task_total(address: str, task: str = TASK) -> int:
    """Return gearmand's count of queued plus running jobs of ``task``."""
    return gearmand_status(address).get(task, (0, 0, 0))[0]


def wait_drained(address: str, submitter: JobSubmitter, timeout: float = DRAIN_TIMEOUT) -> None:
    """Wait until the submitter finished and gearmand has no job of TASK, queued or running."""
    started = time.monotonic()
    submitter.join(timeout)
    assert not submitter.is_alive(), "the job submitter did not finish"
    remaining = max(1.0, timeout - (time.monotonic() - started))
    wait_until(
        lambda: task_total(address) == 0,
        timeout=remaining,
        interval=0.25,
        message="gearmand to drain",
    )


def pool_children(pool) -> list[psutil.Process]:
    """Return the master's live forked children: no zombie and no `--check` validation process."""
    try:
        children = psutil.Process(pool.pid).children()
    except psutil.NoSuchProcess:
        return []
    alive = []
    for child in children:
        try:
            if child.status() == psutil.STATUS_ZOMBIE or "--check" in child.cmdline():
                continue
        except psutil.NoSuchProcess:
            continue
        alive.append(child)
    return alive


def pool_child_pids(pool) -> set[int]:
    return {child.pid for child in pool_children(pool)}


CLIENT_ID = re.compile(r"^[^:]*:(?P<pid>\d+):(?P<task>[^#]+)#\d+$")


def registered_workers(address: str) -> dict[int, str]:
    """Return {pid: task} of the pool children that gearmand lists as workers.

    A pool child's client id is "host:pid:task#slot".
    """
    with AdminClient(address, io_timeout=10.0) as admin:
        workers = admin.workers()
    registered = {}
    for worker in workers:
        match = CLIENT_ID.match(worker.client_id)
        if match and worker.tasks:
            registered[int(match["pid"])] = match["task"]
    return registered


def wait_for_children(
    pool, address: str, counts: dict[str, int], timeout: float = REFILL_TIMEOUT
) -> dict[int, str]:
    """Wait until the pool has exactly ``counts`` children per task, all registered at gearmand.

    Returns {pid: task} of the children.
    """
    total = sum(counts.values())

    def settled():
        if pool.poll() is not None:
            raise AssertionError(
                f"the pool master exited with {pool.returncode}:\n{pool.read_stderr()[-3000:]}"
            )
        pids = pool_child_pids(pool)
        if len(pids) != total:
            return None
        registered = {pid: task for pid, task in registered_workers(address).items() if pid in pids}
        if set(registered) != pids:
            return None
        per_task = collections.Counter(registered.values())
        return registered if dict(per_task) == counts else None

    return wait_until(
        settled, timeout=timeout, interval=0.2, message=f"the pool to run exactly {counts}"
    )


def process_gone(pid: int) -> bool:
    """Return whether ``pid`` no longer runs; a zombie waiting for its reaper counts as gone."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def processes_with_marker(marker: str) -> list[psutil.Process]:
    """Return the live processes whose command line contains ``marker``."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if marker in " ".join(process.info["cmdline"] or ()):
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def count_lines(text: str, needle: str) -> int:
    return sum(1 for line in text.splitlines() if needle in line)


def failed_jobs(log: str) -> int:
    """Return how many jobs of TASK raised in do_job, from the worker's log lines."""
    return count_lines(log, f"of task '{TASK}' failed (pid")


def postgres_cluster() -> tuple[str, str]:
    """Return (version, cluster name) of the local Debian PostgreSQL cluster."""
    versions = sorted(os.listdir("/etc/postgresql"))
    if len(versions) != 1:
        raise AssertionError(
            f"expected one PostgreSQL version in /etc/postgresql, found {versions}"
        )
    return versions[0], "main"
