"""Tests of the gearman_pool_status and gearman_pool_scale commands against a fake master.

The fake control socket server replays canned replies, so these tests need no running pool.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from gearman_pool.management.commands.gearman_pool_scale import (
    describe_scale_reply,
    parse_scale_argument,
    parse_scale_arguments,
)
from tests.conftest import REPO_ROOT
from tests.fake_control import FakeControlServer
from tests.fake_control import STATUS_REPLY
from tests.helpers import table_rows

# Upper bound in seconds for `python -m django` to start, fail and exit.
SUBPROCESS_TIMEOUT = 60.0


@pytest.fixture
def server(tmp_path):
    server = FakeControlServer(tmp_path / "control.sock")
    yield server
    server.stop()


def run_command(name: str, *args: str) -> str:
    stdout = io.StringIO()
    call_command(name, *args, stdout=stdout)
    return stdout.getvalue()


def scale_reply(task: str, previous: int, count: int) -> dict:
    return {"ok": True, "task": task, "previous": previous, "count": count}


def run_django(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m django` with tests.settings in a child process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "-m", "django", *args, "--settings=tests.settings"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )


# gearman_pool_status


def test_status_sends_status_request(server):
    server.reply(STATUS_REPLY)

    run_command("gearman_pool_status", "--control-socket", str(server.path))

    assert server.requests == [b'{"command": "status"}\n']


def test_status_prints_tables(server):
    server.reply(STATUS_REPLY)

    output = run_command("gearman_pool_status", "--control-socket", str(server.path))

    assert output.startswith("Pool master pid 4100, uptime 2.0 h, state reloading, ")
    rows = table_rows(output)
    assert ["data_import", "3", "3", "1", "2", "ok"] in rows
    assert ["send_invoices", "2", "0", "0", "5", "failed"] in rows
    busy_row = [
        "data_import",
        "1",
        "4111",
        "busy",
        "H:worker-host:12",
        "3.2 s",
        "17",
        "11.8 MiB",
        "1 min",
        "0",
    ]
    assert busy_row in rows
    old_code_row = rows[rows.index(busy_row) + 1]
    assert old_code_row[:4] == ["data_import", "1", "3990", "stopping (old code)"]
    assert output.endswith("Total: 4 children, 1 busy, 57 jobs done, memory (USS) 32.8 MiB\n")


def test_status_json_equals_reply_without_ok(server):
    server.reply(STATUS_REPLY)

    output = run_command("gearman_pool_status", "--json", "--control-socket", str(server.path))

    expected = {key: value for key, value in STATUS_REPLY.items() if key != "ok"}
    assert json.loads(output) == expected


def test_status_default_socket_from_setting(server):
    server.reply(STATUS_REPLY)

    with override_settings(GEARMAN_POOL_CONTROL_SOCKET=str(server.path)):
        output = run_command("gearman_pool_status")

    assert server.requests == [b'{"command": "status"}\n']
    assert output.startswith("Pool master pid 4100")


def test_status_missing_socket(tmp_path):
    path = tmp_path / "missing.sock"

    with pytest.raises(CommandError) as caught:
        run_command("gearman_pool_status", "--control-socket", str(path))

    assert str(caught.value) == (
        f"no gearman_pool master is listening on {path}: start the pool, "
        "or pass --control-socket with the path the pool uses"
    )


def test_status_timeout_option(server):
    server.hang()

    with pytest.raises(CommandError) as caught:
        run_command("gearman_pool_status", "--timeout", "0.3", "--control-socket", str(server.path))

    assert str(caught.value).startswith(
        "timed out after 0.3 s waiting for the reply of the gearman_pool master"
    )


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "soon"])
def test_status_invalid_timeout(server, timeout):
    with pytest.raises(CommandError) as caught:
        run_command(
            "gearman_pool_status", "--timeout", timeout, "--control-socket", str(server.path)
        )

    assert f"invalid positive number of seconds value: '{timeout}'" in str(caught.value)
    assert server.connections == 0


def test_status_master_rejects(server):
    server.reply({"ok": False, "error": "unknown command 'status': upgrade the pool"})

    with pytest.raises(CommandError) as caught:
        run_command("gearman_pool_status", "--control-socket", str(server.path))

    assert str(caught.value) == "unknown command 'status': upgrade the pool"


def test_status_multiline_error_joined(server):
    server.reply({"ok": False, "error": "first line\nsecond line"})

    with pytest.raises(CommandError) as caught:
        run_command("gearman_pool_status", "--control-socket", str(server.path))

    assert str(caught.value) == "first line second line"


def test_status_garbage_reply(server):
    server.raw(b"garbage\n")

    with pytest.raises(CommandError) as caught:
        run_command("gearman_pool_status", "--control-socket", str(server.path))

    assert str(caught.value).startswith("invalid reply from the gearman_pool master on ")


def test_status_subprocess_missing_socket(tmp_path):
    path = tmp_path / "missing.sock"

    completed = run_django("gearman_pool_status", "--control-socket", str(path))

    assert completed.returncode != 0
    assert completed.stdout == ""
    assert "Traceback" not in completed.stderr
    assert completed.stderr.strip().splitlines() == [
        f"CommandError: no gearman_pool master is listening on {path}: start the pool, "
        "or pass --control-socket with the path the pool uses"
    ]


# gearman_pool_scale argument parsing


@pytest.mark.parametrize(
    ("argument", "request_fields"),
    [
        ("data_import=6", {"count": 6}),
        ("data_import=0", {"count": 0}),
        ("data_import=007", {"count": 7}),
        ("data_import=+2", {"delta": 2}),
        ("data_import=-1", {"delta": -1}),
        # A minus sign always makes a relative change, never a negative count.
        ("data_import=-3", {"delta": -3}),
    ],
)
def test_scale_argument_forms(argument, request_fields):
    assert parse_scale_argument(argument) == {
        "command": "scale",
        "task": "data_import",
        **request_fields,
    }


def test_scale_argument_command_name():
    request = parse_scale_argument("gearman_worker_data_import=4")

    assert request == {"command": "scale", "task": "gearman_worker_data_import", "count": 4}


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("data_import", "invalid argument 'data_import': expected TASK=COUNT, TASK=+N or TASK=-N"),
        ("data_import:4", "invalid argument 'data_import:4': expected TASK=COUNT"),
        ("=4", "invalid argument '=4': the task name before '=' is empty"),
        ("data import=4", "invalid task name 'data import' in 'data import=4'"),
        ("data_import\t=4", "invalid task name 'data_import\\t'"),
        (
            "data_import=",
            "invalid count '' in 'data_import=': expected a whole number of children (0 or more), +N or -N",
        ),
        ("data_import=four", "invalid count 'four' in 'data_import=four'"),
        ("data_import=1.5", "invalid count '1.5'"),
        ("data_import= 4", "invalid count ' 4'"),
        ("data_import=+-1", "invalid count '+-1'"),
        ("data_import=--1", "invalid count '--1'"),
        ("data_import=4=5", "invalid count '4=5'"),
        ("data_import=1e3", "invalid count '1e3'"),
        ("data_import=\u0663", "invalid count '\u0663'"),
        ("data_import=+0", "invalid change 'data_import=+0': +0 changes nothing"),
        ("data_import=-0", "invalid change 'data_import=-0': -0 changes nothing"),
    ],
)
def test_scale_argument_invalid(argument, message):
    with pytest.raises(ValueError) as caught:
        parse_scale_argument(argument)

    assert str(caught.value).startswith(message)


def test_scale_arguments_duplicate_task():
    with pytest.raises(CommandError) as caught:
        parse_scale_arguments(["data_import=4", "send_invoices=1", "data_import=+1"])

    assert (
        str(caught.value) == "task 'data_import' is given more than once: give one change per task"
    )


def test_scale_arguments_lists_every_problem():
    with pytest.raises(CommandError) as caught:
        parse_scale_arguments(["data_import=x", "ok_task=2", "=3"])

    message = str(caught.value)
    assert "invalid count 'x' in 'data_import=x'" in message
    assert "invalid argument '=3'" in message
    assert "ok_task" not in message
    assert "\n" not in message


def test_scale_arguments_in_order():
    requests = parse_scale_arguments(["b=1", "a=+2"])

    assert requests == [
        {"command": "scale", "task": "b", "count": 1},
        {"command": "scale", "task": "a", "delta": 2},
    ]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (scale_reply("data_import", 4, 6), "data_import: 4 -> 6 children"),
        (scale_reply("data_import", 2, 1), "data_import: 2 -> 1 child"),
        (scale_reply("data_import", 3, 0), "data_import: 3 -> 0 children"),
        (scale_reply("data_import", 4, 4), "data_import: 4 children (unchanged)"),
        ({"ok": True, "count": 5}, "data_import: 5 children"),
    ],
)
def test_describe_scale_reply(reply, expected):
    request = {"command": "scale", "task": "data_import", "count": 6}

    assert describe_scale_reply(request, reply) == expected


# gearman_pool_scale command


def test_scale_absolute(server):
    server.reply(scale_reply("data_import", 4, 6))

    output = run_command(
        "gearman_pool_scale", "data_import=6", "--control-socket", str(server.path)
    )

    assert server.requests == [b'{"command": "scale", "task": "data_import", "count": 6}\n']
    assert output == "data_import: 4 -> 6 children\n"


def test_scale_to_zero(server):
    server.reply(scale_reply("data_import", 4, 0))

    output = run_command(
        "gearman_pool_scale", "data_import=0", "--control-socket", str(server.path)
    )

    assert server.requests == [b'{"command": "scale", "task": "data_import", "count": 0}\n']
    assert output == "data_import: 4 -> 0 children\n"


def test_scale_relative(server):
    server.reply(scale_reply("data_import", 4, 6))
    server.reply(scale_reply("send_invoices", 2, 1))

    output = run_command(
        "gearman_pool_scale",
        "data_import=+2",
        "send_invoices=-1",
        "--control-socket",
        str(server.path),
    )

    assert server.requests == [
        b'{"command": "scale", "task": "data_import", "delta": 2}\n',
        b'{"command": "scale", "task": "send_invoices", "delta": -1}\n',
    ]
    assert output == "data_import: 4 -> 6 children\nsend_invoices: 2 -> 1 child\n"


def test_scale_prints_task_from_reply(server):
    # The master resolves a command name to its task name.
    server.reply(scale_reply("data_import", 1, 2))

    output = run_command(
        "gearman_pool_scale", "gearman_worker_data_import=2", "--control-socket", str(server.path)
    )

    assert server.requests == [
        b'{"command": "scale", "task": "gearman_worker_data_import", "count": 2}\n'
    ]
    assert output == "data_import: 1 -> 2 children\n"


def test_scale_default_socket_from_setting(server):
    server.reply(scale_reply("data_import", 4, 5))

    with override_settings(GEARMAN_POOL_CONTROL_SOCKET=str(server.path)):
        output = run_command("gearman_pool_scale", "data_import=+1")

    assert output == "data_import: 4 -> 5 children\n"


@pytest.mark.parametrize(
    "arguments",
    [
        ["data_import"],
        ["data_import=-"],
        ["data_import=4", "data_import=5"],
        ["data_import=4", "bad"],
    ],
    ids=["no-equals", "sign-only", "duplicate", "second-invalid"],
)
def test_scale_invalid_sends_nothing(server, arguments):
    with pytest.raises(CommandError):
        run_command("gearman_pool_scale", *arguments, "--control-socket", str(server.path))

    assert server.connections == 0


def test_scale_negative_count_is_delta(server):
    server.reply(scale_reply("data_import", 4, 1))

    output = run_command(
        "gearman_pool_scale", "data_import=-3", "--control-socket", str(server.path)
    )

    assert server.requests == [b'{"command": "scale", "task": "data_import", "delta": -3}\n']
    assert output == "data_import: 4 -> 1 child\n"


def test_scale_without_arguments():
    with pytest.raises(CommandError) as caught:
        run_command("gearman_pool_scale")

    assert "the following arguments are required: TASK=COUNT" in str(caught.value)


def test_scale_master_rejects_first(server):
    server.reply({"ok": False, "error": "unknown task 'nope': the pool runs data_import"})

    with pytest.raises(CommandError) as caught:
        run_command("gearman_pool_scale", "nope=2", "--control-socket", str(server.path))

    assert (
        str(caught.value) == "scaling nope failed: unknown task 'nope': the pool runs data_import"
    )


def test_scale_master_rejects_second(server):
    server.reply(scale_reply("data_import", 4, 6))
    server.reply(
        {"ok": False, "error": "task 'send_invoices' failed to start: fix it, then reload"}
    )
    stdout = io.StringIO()

    with pytest.raises(CommandError) as caught:
        call_command(
            "gearman_pool_scale",
            "data_import=6",
            "send_invoices=3",
            "--control-socket",
            str(server.path),
            stdout=stdout,
        )

    assert stdout.getvalue() == "data_import: 4 -> 6 children\n"
    assert str(caught.value) == (
        "scaling send_invoices failed: task 'send_invoices' failed to start: fix it, then reload "
        "(the changes printed above were applied)"
    )
    assert len(server.requests) == 2


def test_scale_missing_socket(tmp_path):
    path = tmp_path / "missing.sock"

    with pytest.raises(CommandError) as caught:
        run_command("gearman_pool_scale", "data_import=2", "--control-socket", str(path))

    assert str(caught.value) == (
        f"scaling data_import failed: no gearman_pool master is listening on {path}: start the pool, "
        "or pass --control-socket with the path the pool uses"
    )


def test_scale_subprocess_invalid_argument():
    completed = run_django("gearman_pool_scale", "data_import=lots")

    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr
    assert completed.stderr.strip().splitlines() == [
        "CommandError: invalid count 'lots' in 'data_import=lots': expected a whole number of children "
        "(0 or more), +N or -N, e.g. data_import=4, data_import=+2 or data_import=-1"
    ]


# 0.x import path


def test_alias_commands_reexport():
    from django_gearman_commands.management.commands import gearman_pool_scale as alias_scale
    from django_gearman_commands.management.commands import gearman_pool_status as alias_status
    from gearman_pool.management.commands import gearman_pool_scale, gearman_pool_status

    assert alias_status.Command is gearman_pool_status.Command
    assert alias_scale.Command is gearman_pool_scale.Command
