"""The pool master under load: killed with SIGKILL, and flooded with SIGHUP."""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults.conftest import ScenarioReport
from tests.faults.support import (
    POOL_START_TIMEOUT,
    TASK,
    JobSubmitter,
    Tally,
    count_lines,
    failed_jobs,
    pool_child_pids,
    process_gone,
    processes_with_marker,
    start_fault_pool,
    wait_drained,
    wait_for_children,
)
from tests.helpers import wait_until, worker_count

pytestmark = pytest.mark.slow

# Scenario 3. The README promises that a master killed with SIGKILL leaves no child behind:
# each child has PR_SET_PDEATHSIG set to SIGKILL.
MASTER_KILL_CHILDREN = 3
MASTER_KILL_JOBS = 4_000
MASTER_KILL_RATE = 500.0
CHILDREN_GONE_TIMEOUT = 2.0


def test_master_sigkill_under_load(
    spawn_manage, private_gearmand, tmp_path, fault_db, fault_report
):
    address = private_gearmand.address
    counts = {TASK: MASTER_KILL_CHILDREN}
    pidfile = tmp_path / "pool.pid"
    first = start_fault_pool(spawn_manage, private_gearmand, counts, "--pidfile", str(pidfile))
    children = wait_for_children(first, address, counts, timeout=POOL_START_TIMEOUT)
    prefix = fault_db.new_prefix("s3")
    submitter = JobSubmitter(address, prefix, MASTER_KILL_JOBS, rate=MASTER_KILL_RATE)

    started = time.monotonic()
    submitter.start()
    wait_until(
        lambda: fault_db.distinct_count(prefix) >= MASTER_KILL_JOBS // 4,
        timeout=60,
        message="jobs to run",
    )
    first.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    first.wait(timeout=10)
    wait_until(
        lambda: all(process_gone(pid) for pid in children),
        timeout=CHILDREN_GONE_TIMEOUT,
        interval=0.02,
        message="every child to die with its master",
    )
    children_gone_after = time.monotonic() - killed_at
    wait_until(
        lambda: worker_count(address, TASK) == 0,
        timeout=10,
        message="gearmand to drop the dead workers",
    )
    done_without_master = fault_db.distinct_count(prefix)

    second = start_fault_pool(spawn_manage, private_gearmand, counts, "--pidfile", str(pidfile))
    new_children = wait_for_children(second, address, counts, timeout=POOL_START_TIMEOUT)
    assert pidfile.read_text().strip() == str(second.pid)
    wait_drained(address, submitter)

    tally = Tally.compare(submitter.accepted_ids, fault_db.runs(prefix))
    log = second.read_stderr()
    first_log = first.read_stderr()
    fault_report.add(
        ScenarioReport(
            "3 master SIGKILL, new master",
            submitted=tally.submitted,
            submit_errors=len(submitter.failed_ids),
            completed=tally.completed,
            failed=failed_jobs(first_log) + failed_jobs(log),
            lost=len(tally.lost),
            duplicates=tally.duplicates,
            children=f"{len(pool_child_pids(second))}/{MASTER_KILL_CHILDREN}",
            seconds=time.monotonic() - started,
            notes=(
                f"children gone {children_gone_after:.2f} s after the SIGKILL; "
                f"{done_without_master} jobs done before it; the new master took over the pid file"
            ),
        )
    )

    assert not set(new_children) & set(children)
    assert submitter.unexpected == []
    assert tally.lost == []
    assert second.poll() is None
    assert "names running gearman_pool process" not in log
    assert "Traceback" not in log


# Scenario 4. The README: "SIGHUPs that arrive during a reload coalesce into at most one more
# reload." The burst ends within 0.2 s, before the first reload's check (a fresh Python and
# Django) can finish, so every SIGHUP after the first arrives during that reload and the
# burst causes at most two reloads. A longer burst may also reach into the second reload
# and rightly cause a third.
HUP_COUNTS = {TASK: 3, "echo": 1}
HUP_BURST = 20
HUP_BURST_SECONDS = 0.2
HUP_JOBS = 6_000
HUP_RATE = 300.0
RELOAD_TIMEOUT = 120.0

RELOAD_STARTED = "Reload requested: checking the new code"
RELOAD_COALESCED = "one more reload follows it"
RELOAD_DONE = "Reload: every task is served by new children"


def reloads_settled(pool, sighups_after_burst: int) -> tuple[int, int] | None:
    """Return (reloads started, reloads done) once every requested reload has finished.

    The burst starts one reload, each "one more reload follows it" line promises one more,
    and each later SIGHUP sent while the pool was settled starts one.
    """
    if pool.poll() is not None:
        raise AssertionError(
            f"the pool master exited with {pool.returncode}:\n{pool.read_stderr()[-3000:]}"
        )
    log = pool.read_stderr()
    assert "Reload aborted" not in log, log[-3000:]
    assert "Reload failed" not in log, log[-3000:]
    started = count_lines(log, RELOAD_STARTED)
    done = count_lines(log, RELOAD_DONE)
    expected = 1 + count_lines(log, RELOAD_COALESCED) + sighups_after_burst
    if started == expected and done == started:
        return started, done
    return None


def test_sighup_burst_under_load(spawn_manage, private_gearmand, tmp_path, fault_db, fault_report):
    address = private_gearmand.address
    # The pid file's path is unique to this test, so it marks this pool's processes.
    marker = str(tmp_path / "sighup-burst.pid")
    pool = start_fault_pool(spawn_manage, private_gearmand, HUP_COUNTS, "--pidfile", marker)
    wait_for_children(pool, address, HUP_COUNTS, timeout=POOL_START_TIMEOUT)
    prefix = fault_db.new_prefix("s4")
    submitter = JobSubmitter(address, prefix, HUP_JOBS, rate=HUP_RATE)

    started = time.monotonic()
    submitter.start()
    wait_until(lambda: len(submitter.accepted_ids) >= 300, timeout=60, message="jobs flowing")
    for _signal in range(HUP_BURST):
        pool.send_signal(signal.SIGHUP)
        time.sleep(HUP_BURST_SECONDS / HUP_BURST)
    burst_reloads, _done = wait_until(
        lambda: reloads_settled(pool, 0),
        timeout=RELOAD_TIMEOUT,
        interval=0.2,
        message="the burst's reloads",
    )
    time.sleep(1.0)
    pool.send_signal(signal.SIGHUP)
    total_reloads, _done = wait_until(
        lambda: reloads_settled(pool, 1),
        timeout=RELOAD_TIMEOUT,
        interval=0.2,
        message="the last reload",
    )
    children = wait_for_children(pool, address, HUP_COUNTS)
    strays = [
        process.pid
        for process in processes_with_marker(marker)
        if process.pid != pool.pid and process.pid not in children
    ]
    wait_drained(address, submitter)

    tally = Tally.compare(submitter.accepted_ids, fault_db.runs(prefix))
    log = pool.read_stderr()
    per_task = {task: list(children.values()).count(task) for task in HUP_COUNTS}
    fault_report.add(
        ScenarioReport(
            f"4 SIGHUP burst x{HUP_BURST} + 1",
            submitted=tally.submitted,
            submit_errors=len(submitter.failed_ids),
            completed=tally.completed,
            failed=failed_jobs(log),
            lost=len(tally.lost),
            duplicates=tally.duplicates,
            children=f"{len(children)}/{sum(HUP_COUNTS.values())}",
            seconds=time.monotonic() - started,
            notes=(
                f"{burst_reloads} reloads for the burst, {total_reloads} in total; "
                f"children per task {per_task}; {len(strays)} stray processes"
            ),
        )
    )

    assert burst_reloads <= 2
    assert total_reloads == burst_reloads + 1
    assert per_task == HUP_COUNTS
    assert strays == []
    assert submitter.unexpected == []
    assert tally.lost == []
    assert pool.poll() is None
    assert "Traceback" not in log
