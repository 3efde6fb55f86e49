"""Unit tests of RestartPolicy: per-task boot-failure backoff and the failed state."""

from __future__ import annotations

import pytest

from gearman_pool.pool.policy import RestartPolicy

START = 1000.0


def make_policy(**options) -> RestartPolicy:
    return RestartPolicy(jitter=lambda low, high: 1.0, **options)


def fail_at_boot(policy: RestartPolicy, task: str, now: float) -> float:
    """Record a child of ``task`` that died 0.1 s after its start, and return the delay."""
    return policy.record_exit(task, started_at=now - 0.1, now=now)


def test_first_boot_failure_delay():
    policy = make_policy()

    assert fail_at_boot(policy, "echo", START) == 0.5
    assert policy.state("echo").boot_failures == 1
    assert policy.next_spawn_time("echo") == START + 0.5


def test_boot_failure_delay_doubles():
    policy = make_policy()

    delays = [fail_at_boot(policy, "echo", START + index) for index in range(4)]

    assert delays == [0.5, 1.0, 2.0, 4.0]


def test_boot_failure_delay_capped():
    policy = make_policy(max_delay=3.0, max_boot_failures=100)

    delays = [fail_at_boot(policy, "echo", START + index) for index in range(7)]

    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0]


def test_jitter_scales_delay():
    calls = []

    def jitter(low, high):
        calls.append((low, high))
        return 1.2

    policy = RestartPolicy(jitter=jitter)

    assert fail_at_boot(policy, "echo", START) == pytest.approx(0.6)
    assert calls == [(0.8, 1.2)]


def test_default_jitter_range():
    policy = RestartPolicy()

    delay = fail_at_boot(policy, "echo", START)

    assert 0.4 <= delay <= 0.6


def test_exit_after_boot_window_resets():
    policy = make_policy(boot_window=5.0)
    fail_at_boot(policy, "echo", START)
    fail_at_boot(policy, "echo", START + 1)

    delay = policy.record_exit("echo", started_at=START + 2, now=START + 7)

    assert delay == 0.0
    assert policy.state("echo").boot_failures == 0
    assert policy.may_spawn("echo", START + 7)
    assert fail_at_boot(policy, "echo", START + 8) == 0.5


def test_exit_inside_boot_window_fails():
    policy = make_policy(boot_window=5.0)

    delay = policy.record_exit("echo", started_at=START, now=START + 4.9)

    assert delay == 0.5
    assert policy.state("echo").boot_failures == 1


def test_served_jobs_resets():
    policy = make_policy()
    fail_at_boot(policy, "echo", START)
    fail_at_boot(policy, "echo", START + 1)

    delay = policy.record_exit("echo", started_at=START + 1.9, now=START + 2, booted=True)

    assert delay == 0.0
    assert policy.state("echo").boot_failures == 0
    assert policy.may_spawn("echo", START + 2)


def test_record_success_resets():
    policy = make_policy()
    for index in range(3):
        fail_at_boot(policy, "echo", START + index)

    policy.record_success("echo")

    assert policy.state("echo").boot_failures == 0
    assert fail_at_boot(policy, "echo", START + 10) == 0.5


def test_may_spawn_waits_for_delay():
    policy = make_policy()
    assert policy.may_spawn("echo", START)

    fail_at_boot(policy, "echo", START)

    assert not policy.may_spawn("echo", START)
    assert not policy.may_spawn("echo", START + 0.49)
    assert policy.may_spawn("echo", START + 0.5)
    assert policy.may_spawn("echo", START + 60)


def test_failed_after_max_boot_failures():
    policy = make_policy(max_boot_failures=3)
    fail_at_boot(policy, "echo", START)
    fail_at_boot(policy, "echo", START + 10)
    assert not policy.is_failed("echo")

    fail_at_boot(policy, "echo", START + 20)

    assert policy.is_failed("echo")
    assert not policy.may_spawn("echo", START + 20)
    assert not policy.may_spawn("echo", START + 10_000)


def test_success_before_limit_avoids_failure():
    policy = make_policy(max_boot_failures=3)
    fail_at_boot(policy, "echo", START)
    fail_at_boot(policy, "echo", START + 10)

    policy.record_success("echo")
    fail_at_boot(policy, "echo", START + 20)
    fail_at_boot(policy, "echo", START + 30)

    assert not policy.is_failed("echo")


def test_tasks_are_independent():
    policy = make_policy(max_boot_failures=2)
    fail_at_boot(policy, "echo", START)
    fail_at_boot(policy, "echo", START + 10)

    assert policy.is_failed("echo")
    assert not policy.is_failed("sleep")
    assert policy.may_spawn("sleep", START + 10)
    assert policy.state("sleep").boot_failures == 0
    assert fail_at_boot(policy, "sleep", START + 11) == 0.5
    assert policy.may_spawn("sleep", START + 11.5)
