"""The servers around a pool fail under load: gearmand restarts, PostgreSQL restarts."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid

import pytest

from gearman_pool.address import ServerAddress
from gearman_pool.client import GearmanClient
from gearman_pool.errors import GearmanError
from tests.faults.conftest import ScenarioReport
from tests.faults.support import (
    POOL_START_TIMEOUT,
    TASK,
    TASK_BYTES,
    JobSubmitter,
    Tally,
    count_lines,
    failed_jobs,
    postgres_cluster,
    start_fault_pool,
    wait_drained,
    wait_for_children,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

# Scenario 2. gearmand keeps background jobs in SQLite (--queue-type=libsqlite3), so that the
# jobs it accepted survive its restart; with the default in-memory queue a restart drops them.
RESTARTS = 5
GEARMAND_UP_SECONDS = 2.5
GEARMAND_DOWN_SECONDS = 1.5
RESTART_CHILDREN = 3
RESTART_JOBS = 6_000
RESTART_RATE = 300.0
# WARNING lines a pool may log per outage: one "unavailable" line per child, plus one
# "could not report job" line per child that was in a job when gearmand stopped, plus slack.
WARNINGS_PER_OUTAGE = 3 * RESTART_CHILDREN


def test_gearmand_restarts_under_load(
    gearmand_factory, spawn_manage, tmp_path, fault_db, fault_report
):
    server = gearmand_factory(
        "--queue-type=libsqlite3", f"--libsqlite3-db={tmp_path / 'gearmand-queue.sqlite3'}"
    )
    address = server.address
    counts = {TASK: RESTART_CHILDREN}
    pool = start_fault_pool(spawn_manage, server, counts)
    first_children = wait_for_children(pool, address, counts, timeout=POOL_START_TIMEOUT)
    prefix = fault_db.new_prefix("s2")
    submitter = JobSubmitter(address, prefix, RESTART_JOBS, rate=RESTART_RATE)

    started = time.monotonic()
    submitter.start()
    outage_offsets = []
    for _restart in range(RESTARTS):
        time.sleep(GEARMAND_UP_SECONDS)
        outage_offsets.append(len(pool.read_stderr()))
        server.stop()
        time.sleep(GEARMAND_DOWN_SECONDS)
        server.start()
        assert server.address == address
    wait_drained(address, submitter)
    children = wait_for_children(pool, address, counts)

    runs = fault_db.runs(prefix)
    tally = Tally.compare(submitter.accepted_ids, runs)
    ran_after_failed_submit = sum(1 for job_id in submitter.failed_ids if runs.get(job_id))
    log = pool.read_stderr()
    outage_ends = [*outage_offsets[1:], len(log)]
    outage_logs = [log[start:end] for start, end in zip(outage_offsets, outage_ends, strict=True)]
    warnings_per_outage = [count_lines(text, " WARNING ") for text in outage_logs]
    fault_report.add(
        ScenarioReport(
            f"2 gearmand restarted x{RESTARTS}",
            submitted=tally.submitted,
            submit_errors=len(submitter.failed_ids),
            completed=tally.completed,
            failed=failed_jobs(log),
            lost=len(tally.lost),
            duplicates=tally.duplicates,
            children=f"{len(children)}/{RESTART_CHILDREN}",
            seconds=time.monotonic() - started,
            notes=(
                f"WARNING lines per outage {warnings_per_outage}; "
                f"{ran_after_failed_submit} failed submits ran anyway; "
                f"children replaced: {len(set(first_children) - set(children))}"
            ),
        )
    )

    assert submitter.unexpected == []
    assert submitter.failed_ids, "no submit failed: the outages did not overlap the submits"
    assert tally.lost == []
    assert pool.poll() is None
    assert set(children) == set(first_children), "children exited while gearmand was down"
    assert "times in a row" not in log
    assert count_lines(log, "restarting in") == 0
    assert all(count <= WARNINGS_PER_OUTAGE for count in warnings_per_outage), warnings_per_outage
    assert "Traceback" not in log


# Scenario 7.
DATABASE_CHILDREN = 2
JOBS_PER_CLIENT = 10
CLIENTS_AFTER_RESTART = 2
WARM_UP_JOBS = 40
PG_CTL_TIMEOUT = 120.0


def pg_ctlcluster(action: str) -> subprocess.CompletedProcess:
    version, cluster = postgres_cluster()
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, action],
        capture_output=True,
        text=True,
        timeout=PG_CTL_TIMEOUT,
    )


def ensure_postgres_running(fault_db) -> None:
    if fault_db.is_reachable():
        return
    result = pg_ctlcluster("start")
    assert result.returncode == 0 or fault_db.is_reachable(), (
        f"cannot start PostgreSQL again: {result.stderr}"
    )


class ForegroundJobs(threading.Thread):
    """Submits foreground jobs one after the other and counts how they end."""

    def __init__(self, address: str, job_ids: list[str]):
        super().__init__(daemon=True)
        self.address = ServerAddress.parse(address)
        self.job_ids = job_ids
        self.results: dict[str, bytes] = {}
        self.failures: dict[str, str] = {}

    def run(self) -> None:
        with GearmanClient([self.address]) as client:
            for job_id in self.job_ids:
                try:
                    self.results[job_id] = client.submit_job(
                        TASK_BYTES, job_id.encode(), background=False, timeout=60
                    ).result
                except GearmanError as exc:
                    self.failures[job_id] = f"{type(exc).__name__}: {exc}"


def test_database_restart_while_idle(spawn_manage, private_gearmand, fault_db, fault_report):
    address = private_gearmand.address
    counts = {TASK: DATABASE_CHILDREN}
    application_name = f"gearman-pool-faults-{uuid.uuid4().hex[:8]}"
    pool = start_fault_pool(
        spawn_manage, private_gearmand, counts, env={"FAULTS_APPLICATION_NAME": application_name}
    )
    children = wait_for_children(pool, address, counts, timeout=POOL_START_TIMEOUT)
    prefix = fault_db.new_prefix("s7")

    # Every child opens its persistent connection with its first job.
    warm_up = JobSubmitter(address, f"{prefix}warm-", WARM_UP_JOBS)
    warm_up.start()
    wait_drained(address, warm_up)

    def children_sessions():
        sessions = fault_db.session_pids(application_name)
        return sessions if len(sessions) == DATABASE_CHILDREN else None

    sessions_before = wait_until(
        children_sessions,
        timeout=30,
        message=f"{DATABASE_CHILDREN} persistent database sessions of the children",
    )

    started = time.monotonic()
    try:
        restart = pg_ctlcluster("restart")
        assert restart.returncode == 0, (
            f"pg_ctlcluster restart failed: {restart.stdout}{restart.stderr}"
        )
        wait_until(
            fault_db.is_reachable,
            timeout=60,
            interval=0.2,
            message="PostgreSQL to accept connections",
        )
        downtime = time.monotonic() - started

        clients = [
            ForegroundJobs(
                address,
                [f"{prefix}after-{client}-{number:03d}" for number in range(JOBS_PER_CLIENT)],
            )
            for client in range(CLIENTS_AFTER_RESTART)
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join(timeout=120)
    finally:
        ensure_postgres_running(fault_db)

    failures = {job_id: error for client in clients for job_id, error in client.failures.items()}
    submitted = [job_id for client in clients for job_id in client.job_ids]
    tally = Tally.compare(submitted, fault_db.runs(f"{prefix}after-"))
    serving_pids = fault_db.pids(f"{prefix}after-")
    sessions_after = fault_db.session_pids(application_name)
    final_children = wait_for_children(pool, address, counts)
    log = pool.read_stderr()
    fault_report.add(
        ScenarioReport(
            "7 PostgreSQL restart, idle",
            submitted=tally.submitted,
            submit_errors=0,
            completed=tally.completed,
            failed=len(failures),
            lost=len(tally.lost),
            duplicates=tally.duplicates,
            children=f"{len(final_children)}/{DATABASE_CHILDREN}",
            seconds=time.monotonic() - started,
            notes=(
                f"CONN_MAX_AGE=None, CONN_HEALTH_CHECKS=True; restart took {downtime:.1f} s; "
                f"{len(serving_pids)} children served afterwards; "
                f"children replaced: {len(set(children) - set(final_children))}"
            ),
        )
    )

    assert all(not client.is_alive() for client in clients)
    assert failures == {}
    assert tally.lost == []
    assert serving_pids <= set(children), "jobs after the restart ran in new children"
    assert set(final_children) == set(children)
    assert not sessions_after & sessions_before
    assert "Traceback" not in log
