"""Pool children killed under load: at random, all at once, and by a poison job."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from gearman_pool.errors import JobFailed
from tests.faults.conftest import ScenarioReport
from tests.faults.faultapp.management.commands.gearman_worker_fault_record import POISON_PREFIX
from tests.faults.support import (
    DRAIN_TIMEOUT,
    POOL_START_TIMEOUT,
    SETTINGS_DEBUG,
    TASK,
    JobSubmitter,
    Tally,
    count_lines,
    failed_jobs,
    pool_child_pids,
    start_fault_pool,
    task_total,
    wait_drained,
    wait_for_children,
)
from tests.helpers import admin_command, submit, wait_until

pytestmark = pytest.mark.slow

# Scenario 1. On a shared 2-core VM, 4 children drained the 10,000 jobs in 4 to 8 s while
# being killed, so the test runs the full count.
RANDOM_KILL_JOBS = 10_000
RANDOM_KILL_CHILDREN = 4
RANDOM_KILL_INTERVAL = 0.2


def test_random_child_sigkill_under_load(spawn_manage, private_gearmand, fault_db, fault_report):
    address = private_gearmand.address
    counts = {TASK: RANDOM_KILL_CHILDREN}
    pool = start_fault_pool(spawn_manage, private_gearmand, counts)
    wait_for_children(pool, address, counts, timeout=POOL_START_TIMEOUT)
    prefix = fault_db.new_prefix("s1")
    submitter = JobSubmitter(address, prefix, RANDOM_KILL_JOBS)
    chooser = random.Random()

    started = time.monotonic()
    submitter.start()
    kills = 0
    while submitter.is_alive() or task_total(address) > 0:
        assert time.monotonic() - started < DRAIN_TIMEOUT, (
            f"{RANDOM_KILL_JOBS} jobs did not drain in time"
        )
        time.sleep(RANDOM_KILL_INTERVAL)
        pids = sorted(pool_child_pids(pool))
        if pids:
            try:
                os.kill(chooser.choice(pids), signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
    wait_drained(address, submitter)
    children = wait_for_children(pool, address, counts)

    tally = Tally.compare(submitter.accepted_ids, fault_db.runs(prefix))
    log = pool.read_stderr()
    fault_report.add(
        ScenarioReport(
            "1 random child SIGKILL",
            submitted=tally.submitted,
            submit_errors=len(submitter.failed_ids),
            completed=tally.completed,
            failed=failed_jobs(log),
            lost=len(tally.lost),
            duplicates=tally.duplicates,
            children=f"{len(children)}/{RANDOM_KILL_CHILDREN}",
            seconds=time.monotonic() - started,
            notes=(
                f"{kills} SIGKILLs, one every {RANDOM_KILL_INTERVAL:g} s; "
                f"{tally.extra_runs} extra runs"
            ),
        )
    )

    assert submitter.unexpected == []
    assert submitter.failed_ids == []
    assert tally.submitted == RANDOM_KILL_JOBS
    assert tally.lost == []
    assert pool.poll() is None
    assert kills >= 10
    assert count_lines(log, "killed by SIGKILL") >= kills * 0.9
    assert "times in a row" not in log


# Scenario 5. The jobs keep flowing for the whole test, so every child serves a job within
# milliseconds of its start and its death is never counted as a boot failure.
MASS_KILL_CHILDREN = 3
MASS_KILL_ROUNDS = 10
MASS_KILL_INTERVAL = 1.0
MASS_KILL_JOBS = 6_000
MASS_KILL_RATE = 500.0


def kill_all_children(pool) -> int:
    killed = 0
    for pid in pool_child_pids(pool):
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


def test_all_children_sigkill_repeatedly(spawn_manage, private_gearmand, fault_db, fault_report):
    address = private_gearmand.address
    counts = {TASK: MASS_KILL_CHILDREN}
    pool = start_fault_pool(spawn_manage, private_gearmand, counts, settings=SETTINGS_DEBUG)
    wait_for_children(pool, address, counts, timeout=POOL_START_TIMEOUT)
    prefix = fault_db.new_prefix("s5")
    submitter = JobSubmitter(address, prefix, MASS_KILL_JOBS, rate=MASS_KILL_RATE)

    started = time.monotonic()
    submitter.start()
    killed = []
    for _round in range(MASS_KILL_ROUNDS):
        time.sleep(MASS_KILL_INTERVAL)
        killed.append(kill_all_children(pool))
    wait_drained(address, submitter)
    children = wait_for_children(pool, address, counts)

    tally = Tally.compare(submitter.accepted_ids, fault_db.runs(prefix))
    log = pool.read_stderr()
    fault_report.add(
        ScenarioReport(
            "5 all children SIGKILL x10",
            submitted=tally.submitted,
            submit_errors=len(submitter.failed_ids),
            completed=tally.completed,
            failed=failed_jobs(log),
            lost=len(tally.lost),
            duplicates=tally.duplicates,
            children=f"{len(children)}/{MASS_KILL_CHILDREN}",
            seconds=time.monotonic() - started,
            notes=(
                f"children killed per round: {killed}; DEBUG log of {len(log.splitlines())} lines; "
                f"{count_lines(log, 'restarting in')} delayed restarts"
            ),
        )
    )

    assert pool.poll() is None
    assert submitter.unexpected == []
    assert tally.lost == []
    assert killed == [MASS_KILL_CHILDREN] * MASS_KILL_ROUNDS, (
        "a slot was still empty a second later"
    )
    assert "times in a row" not in log
    assert "DEBUG" in log
    assert "Traceback" not in log


# Without load, a child killed within 5 s of its start has served no job, and the pool counts
# its death as a boot failure even though it had registered at gearmand.
IDLE_KILL_CHILDREN = 10
IDLE_KILL_GRACE = 2.0


def test_idle_children_sigkill_at_once_refilled(spawn_manage, private_gearmand, fault_report):
    address = private_gearmand.address
    counts = {TASK: IDLE_KILL_CHILDREN}
    pool = start_fault_pool(spawn_manage, private_gearmand, counts)
    first = wait_for_children(pool, address, counts, timeout=POOL_START_TIMEOUT)

    started = time.monotonic()
    killed = kill_all_children(pool)
    time.sleep(IDLE_KILL_GRACE)
    log = pool.read_stderr()
    master = "running" if pool.poll() is None else f"exited with {pool.returncode}"
    fault_report.add(
        ScenarioReport(
            f"5 idle, {IDLE_KILL_CHILDREN} children SIGKILL once",
            children=f"{len(pool_child_pids(pool))}/{IDLE_KILL_CHILDREN}",
            seconds=time.monotonic() - started,
            notes=(
                f"{killed} killed within 5 s of start; "
                f"master {master} after {IDLE_KILL_GRACE:g} s; "
                f"{count_lines(log, 'restarting in')} delayed restarts; "
                f"task marked failed: {'times in a row' in log}"
            ),
        )
    )

    assert pool.poll() is None, f"the master exited with {pool.returncode}"
    refilled = wait_for_children(pool, address, counts, timeout=15)
    assert not set(refilled) & set(first)
    assert "times in a row" not in pool.read_stderr()


# Scenario 6. gearmand (libgearman-server/job.cc, gearman_server_job_queue) counts a retry
# each time it requeues a job whose worker disconnected, and drops the job with a WORK_FAIL
# to its clients when the count reaches --job-retries. With --job-retries=2 a job that kills
# every worker therefore runs exactly twice, as this test shows on Debian's gearmand 1.1.20.
JOB_RETRIES = 2
POISON_CHILDREN = 2
POISON_JOBS = 2_000
POISON_RATE = 400.0


def test_poison_job_dropped_after_retries(gearmand_factory, spawn_manage, fault_db, fault_report):
    server = gearmand_factory(f"--job-retries={JOB_RETRIES}")
    address = server.address
    counts = {TASK: POISON_CHILDREN}
    pool = start_fault_pool(spawn_manage, server, counts)
    wait_for_children(pool, address, counts, timeout=POOL_START_TIMEOUT)
    prefix = fault_db.new_prefix("s6")
    poison_prefix = fault_db.new_prefix("poison")
    assert poison_prefix.startswith(POISON_PREFIX)
    foreground_id, background_id = f"{poison_prefix}foreground", f"{poison_prefix}background"
    submitter = JobSubmitter(address, prefix, POISON_JOBS, rate=POISON_RATE)

    started = time.monotonic()
    submitter.start()
    wait_until(
        lambda: len(submitter.accepted_ids) >= POISON_JOBS // 4,
        timeout=60,
        message="normal jobs flowing",
    )
    submit(server, TASK, background_id.encode())
    with pytest.raises(JobFailed) as failure:
        submit(server, TASK, foreground_id.encode(), background=False, timeout=120)
    wait_drained(address, submitter)
    children = wait_for_children(pool, address, counts)

    runs = fault_db.runs(prefix)
    poison_runs = fault_db.runs(poison_prefix)
    tally = Tally.compare(submitter.accepted_ids, runs)
    queued_handles = [
        line.split(b"\t")[0].decode() for line in admin_command(address, b"show jobs")
    ]
    log = pool.read_stderr()
    fault_report.add(
        ScenarioReport(
            f"6 poison job, retries={JOB_RETRIES}",
            submitted=tally.submitted + 2,
            submit_errors=len(submitter.failed_ids),
            completed=tally.completed,
            failed=2 + failed_jobs(log),
            lost=len(tally.lost),
            duplicates=tally.duplicates,
            children=f"{len(children)}/{POISON_CHILDREN}",
            seconds=time.monotonic() - started,
            notes=(
                f"poison runs: foreground {poison_runs[foreground_id]}, "
                f"background {poison_runs[background_id]}; "
                f"{count_lines(log, 'killed by SIGKILL')} children killed; gearmand lists "
                f"{len(queued_handles)} jobs afterwards"
            ),
        )
    )

    assert failure.value.message == ""
    assert poison_runs[foreground_id] == JOB_RETRIES
    assert poison_runs[background_id] == JOB_RETRIES
    assert queued_handles == []
    assert task_total(address) == 0
    assert submitter.unexpected == []
    assert tally.lost == []
    assert count_lines(log, "killed by SIGKILL") == 2 * JOB_RETRIES
    assert pool.poll() is None
    assert "times in a row" not in log
