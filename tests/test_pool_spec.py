"""Unit tests of gearman_pool.pool.spec: --workers parsing, name resolution, discovery."""

from __future__ import annotations

import pytest
from django.core.management.base import BaseCommand

from gearman_pool.pool import spec
from gearman_pool.pool.spec import (
    PoolConfigurationError,
    PoolEntry,
    WorkerCommandInfo,
    describe_import_error,
    discover_worker_commands,
    parse_workers_option,
    resolve_entries,
)

TESTAPP = "tests.testapp"
TESTAPP_TASKS = {
    "gearman_worker_crashboot": "crashboot",
    "gearman_worker_echo": "echo",
    "gearman_worker_legacy": "legacy",
    "gearman_worker_pid": "pid",
    "gearman_worker_raw": "raw",
    "gearman_worker_record": "record",
    "gearman_worker_sleep": "sleep",
    "gearman_worker_stubborn": "stubborn",
}
DISCOVERED = {
    "gearman_worker_echo": WorkerCommandInfo("gearman_worker_echo", TESTAPP, "echo"),
    "gearman_worker_sleep": WorkerCommandInfo("gearman_worker_sleep", TESTAPP, "sleep"),
}


def raise_import_error():
    raise ImportError("No module named 'missing_dependency'")


# ---- parse_workers_option -------------------------------------------------------------


def test_parse_valid_pairs():
    assert parse_workers_option("echo=2,gearman_worker_sleep=1") == [("echo", "2"), ("gearman_worker_sleep", "1")]


def test_parse_strips_spaces():
    assert parse_workers_option(" echo = 2 ,  sleep=1 ") == [("echo", "2"), ("sleep", "1")]


@pytest.mark.parametrize("text", ["", "   ", ",", " , "])
def test_parse_empty_option(text):
    with pytest.raises(PoolConfigurationError, match="--workers is empty"):
        parse_workers_option(text)


@pytest.mark.parametrize("text", ["echo=2,", "echo=2,,sleep=1", ",echo=2"])
def test_parse_empty_entry(text):
    with pytest.raises(PoolConfigurationError, match="empty entry") as raised:
        parse_workers_option(text)

    assert repr(text) in str(raised.value)


def test_parse_missing_equals():
    assert parse_workers_option("echo=2,sleep") == [("echo", "2"), ("sleep", None)]

    with pytest.raises(PoolConfigurationError) as raised:
        resolve_entries(parse_workers_option("nope=1,foo=x,echo"), DISCOVERED)

    message = str(raised.value)
    assert "unknown worker 'nope'" in message
    assert "unknown worker 'foo'" in message
    assert "entry 'echo' has no count; expected NAME=COUNT" in message


@pytest.mark.parametrize("count", ["٢", "１", "1_0", "1.0", " "])
def test_resolve_rejects_non_ascii_counts(count):
    with pytest.raises(PoolConfigurationError) as raised:
        resolve_entries([("echo", count)], DISCOVERED)

    assert f"count {count!r} for 'echo' is not an integer" in str(raised.value)


def test_resolve_rejects_huge_count():
    with pytest.raises(PoolConfigurationError) as raised:
        resolve_entries([("echo", "1000000000")], DISCOVERED)

    assert "count 1000000000 for 'echo' is above the maximum of 1000" in str(raised.value)


# ---- resolve_entries ------------------------------------------------------------------


def test_resolve_task_and_command_names():
    entries = resolve_entries([("echo", "2"), ("gearman_worker_sleep", "1")], DISCOVERED)

    assert entries == [
        PoolEntry("gearman_worker_echo", TESTAPP, "echo", 2),
        PoolEntry("gearman_worker_sleep", TESTAPP, "sleep", 1),
    ]


def test_resolve_accepts_integer_counts():
    # GEARMAN_POOL_WORKERS gives counts as int, not as text.
    assert resolve_entries([("echo", 3)], DISCOVERED) == [PoolEntry("gearman_worker_echo", TESTAPP, "echo", 3)]


def test_resolve_unknown_name():
    with pytest.raises(PoolConfigurationError) as raised:
        resolve_entries([("nope", "1")], DISCOVERED)

    assert "unknown worker 'nope'" in str(raised.value)


@pytest.mark.parametrize("count", ["x", "1.5", "", True, 2.0])
def test_resolve_non_integer_count(count):
    with pytest.raises(PoolConfigurationError) as raised:
        resolve_entries([("echo", count)], DISCOVERED)

    assert f"count {count!r} for 'echo' is not an integer" in str(raised.value)


@pytest.mark.parametrize("count", ["0", "-1", 0])
def test_resolve_count_below_one(count):
    with pytest.raises(PoolConfigurationError) as raised:
        resolve_entries([("echo", count)], DISCOVERED)

    assert f"count {int(count)} for 'echo' is below 1" in str(raised.value)


def test_resolve_duplicate_task():
    with pytest.raises(PoolConfigurationError) as raised:
        resolve_entries([("echo", "1"), ("gearman_worker_echo", "2")], DISCOVERED)

    assert "'gearman_worker_echo' repeats 'echo'" in str(raised.value)


def test_resolve_duplicate_same_name():
    with pytest.raises(PoolConfigurationError) as raised:
        resolve_entries([("sleep", "1"), ("sleep", "1")], DISCOVERED)

    assert "'sleep' repeats 'sleep'" in str(raised.value)


def test_resolve_no_pairs():
    with pytest.raises(PoolConfigurationError, match="no workers given"):
        resolve_entries([], DISCOVERED)


def test_resolve_lists_every_problem():
    pairs = [
        ("nope", "1"),
        ("echo", "x"),
        ("sleep", "0"),
        ("gearman_worker_sleep", "-1"),
        ("gearman_worker_echo", "2"),
        ("echo", "3"),
    ]

    with pytest.raises(PoolConfigurationError) as raised:
        resolve_entries(pairs, DISCOVERED)

    message = str(raised.value)
    assert message.startswith("invalid --workers: ")
    assert "unknown worker 'nope'" in message
    assert "count 'x' for 'echo' is not an integer" in message
    assert "count 0 for 'sleep' is below 1" in message
    assert "count -1 for 'gearman_worker_sleep' is below 1" in message
    assert "'echo' repeats 'gearman_worker_echo'" in message
    assert message.endswith("Valid names: echo (gearman_worker_echo), sleep (gearman_worker_sleep).")


def test_resolve_without_worker_commands():
    with pytest.raises(PoolConfigurationError) as raised:
        resolve_entries([("echo", "1")], {})

    assert "No worker commands were found" in str(raised.value)


# ---- discover_worker_commands ---------------------------------------------------------


def test_discover_testapp_commands():
    discovered = discover_worker_commands()

    for command_name, task_name in TESTAPP_TASKS.items():
        assert discovered[command_name] == WorkerCommandInfo(command_name, TESTAPP, task_name)
    assert all(name.startswith("gearman_worker_") for name in discovered)


def test_discover_ignores_other_commands(monkeypatch):
    commands = {
        "check": "django.core",
        "gearman_pool": "gearman_pool",
        "gearman_worker_echo": TESTAPP,
        "gearman_worker_plain": TESTAPP,
    }
    real_load = spec.load_command_class
    loaded = []

    def load(app_name, command_name):
        loaded.append(command_name)
        if command_name == "gearman_worker_plain":
            return BaseCommand()
        return real_load(app_name, command_name)

    monkeypatch.setattr(spec, "get_commands", lambda: commands)
    monkeypatch.setattr(spec, "load_command_class", load)

    discovered = discover_worker_commands()

    assert list(discovered) == ["gearman_worker_echo"]
    assert loaded == ["gearman_worker_echo", "gearman_worker_plain"]


def test_discover_syntax_error(monkeypatch):
    error = SyntaxError("invalid syntax", ("/srv/app/gearman_worker_broken.py", 7, 3, "def do_job(self:\n"))
    commands = {"gearman_worker_broken": "app.broken"}

    def load(app_name, command_name):
        raise error

    monkeypatch.setattr(spec, "get_commands", lambda: commands)
    monkeypatch.setattr(spec, "load_command_class", load)

    with pytest.raises(PoolConfigurationError) as raised:
        discover_worker_commands()

    message = str(raised.value)
    assert "'gearman_worker_broken'" in message
    assert "'app.broken'" in message
    assert "SyntaxError: invalid syntax" in message
    assert "/srv/app/gearman_worker_broken.py, line 7" in message
    assert raised.value.__cause__ is error


def test_discover_import_error(monkeypatch):
    commands = {"gearman_worker_broken": "app.broken"}

    def load(app_name, command_name):
        raise_import_error()

    monkeypatch.setattr(spec, "get_commands", lambda: commands)
    monkeypatch.setattr(spec, "load_command_class", load)

    with pytest.raises(PoolConfigurationError) as raised:
        discover_worker_commands()

    message = str(raised.value)
    line = raise_import_error.__code__.co_firstlineno + 1
    assert "'gearman_worker_broken'" in message
    assert "ImportError: No module named 'missing_dependency'" in message
    assert f"{__file__}, line {line}" in message
    assert isinstance(raised.value.__cause__, ImportError)


def test_discover_invalid_task_name(monkeypatch):
    class NamelessWorker(spec.GearmanWorkerBaseCommand):
        task_name = ""

        def do_job(self, job_data):
            return job_data

    monkeypatch.setattr(spec, "get_commands", lambda: {"gearman_worker_nameless": TESTAPP})
    monkeypatch.setattr(spec, "load_command_class", lambda app_name, command_name: NamelessWorker())

    with pytest.raises(PoolConfigurationError, match="task_name ''"):
        discover_worker_commands()


# ---- describe_import_error ------------------------------------------------------------


def test_describe_syntax_error():
    error = SyntaxError("unexpected indent", ("/srv/app/worker.py", 12, 1, "  x\n"))

    assert describe_import_error(error) == "SyntaxError: unexpected indent (/srv/app/worker.py, line 12)"


def test_describe_raised_error():
    try:
        raise_import_error()
    except ImportError as exc:
        error = exc

    line = raise_import_error.__code__.co_firstlineno + 1
    assert describe_import_error(error) == (
        f"ImportError: No module named 'missing_dependency' ({__file__}, line {line})"
    )


def test_describe_error_without_traceback():
    assert describe_import_error(RuntimeError("boom")) == "RuntimeError: boom"
