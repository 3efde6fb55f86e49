"""Tests of the text and JSON rendering of the pool master's status reply."""

from __future__ import annotations

import copy
import json

import pytest

from gearman_pool.status_tables import (
    CHILD_COLUMNS,
    TASK_COLUMNS,
    format_duration,
    format_memory,
    render_status,
    status_to_json,
)
from tests.fake_control import STATUS_REPLY
from tests.helpers import table_rows

def split_sections(text: str) -> list[str]:
    return text.rstrip("\n").split("\n\n")


def test_render_four_sections():
    text = render_status(STATUS_REPLY)

    sections = split_sections(text)
    assert len(sections) == 4
    assert text.endswith("\n")
    assert not text.endswith("\n\n")


def test_pool_line():
    pool_line = split_sections(render_status(STATUS_REPLY))[0]

    assert pool_line == (
        "Pool master pid 4100, uptime 2.0 h, state reloading, servers 127.0.0.1:4730, 127.0.0.1:4731"
    )


@pytest.mark.parametrize(
    ("stopping", "reloading", "state"),
    [(False, False, "running"), (True, False, "stopping"), (True, True, "stopping, reloading")],
)
def test_pool_line_state(stopping, reloading, state):
    reply = copy.deepcopy(STATUS_REPLY)
    reply["master"]["stopping"] = stopping
    reply["master"]["reloading"] = reloading

    pool_line = split_sections(render_status(reply))[0]

    assert f", state {state}, " in pool_line


def test_task_table():
    rows = table_rows(split_sections(render_status(STATUS_REPLY))[1])

    assert rows == [
        list(TASK_COLUMNS),
        ["data_import", "3", "3", "1", "2", "ok"],
        ["send_invoices", "2", "0", "0", "5", "failed"],
    ]


def test_child_table():
    rows = table_rows(split_sections(render_status(STATUS_REPLY))[2])

    assert rows == [
        list(CHILD_COLUMNS),
        [
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
        ],
        [
            "data_import",
            "1",
            "3990",
            "stopping (old code)",
            "H:worker-host:9",
            "2 min",
            "31",
            "20.0 MiB",
            "2.0 h",
            "0",
        ],
        ["data_import", "2", "4112", "ready", "-", "-", "9", "-", "45.0 s", "1"],
        ["data_import", "3", "4113", "starting", "-", "-", "0", "1.0 MiB", "0.4 s", "0"],
    ]


def test_child_table_sorted_by_task_then_slot():
    reply = copy.deepcopy(STATUS_REPLY)
    reply["children"].append(dict(reply["children"][0], task="archive", slot=2, pid=5002))
    reply["children"].append(dict(reply["children"][0], task="archive", slot=1, pid=5001))

    rows = table_rows(split_sections(render_status(reply))[2])[1:]

    assert [(row[0], row[1], row[2]) for row in rows] == [
        ("archive", "1", "5001"),
        ("archive", "2", "5002"),
        ("data_import", "1", "4111"),
        ("data_import", "1", "3990"),
        ("data_import", "2", "4112"),
        ("data_import", "3", "4113"),
    ]


def test_totals_line():
    totals_line = split_sections(render_status(STATUS_REPLY))[3]

    assert totals_line == "Total: 4 children, 1 busy, 57 jobs done, memory (USS) 32.8 MiB"


def test_totals_line_unknown_memory():
    reply = copy.deepcopy(STATUS_REPLY)
    reply["totals"]["memory_uss"] = None

    totals_line = split_sections(render_status(reply))[3]

    assert totals_line == "Total: 4 children, 1 busy, 57 jobs done, memory (USS) -"


def test_empty_pool():
    reply = {
        "ok": True,
        "master": {"pid": 7, "uptime": 1.0, "stopping": True, "reloading": False, "servers": []},
        "tasks": [],
        "children": [],
        "totals": {"children": 0, "busy": 0, "jobs_done": 0, "memory_uss": None},
    }

    sections = split_sections(render_status(reply))

    assert sections[0] == "Pool master pid 7, uptime 1.0 s, state stopping, servers -"
    assert table_rows(sections[1]) == [list(TASK_COLUMNS)]
    assert table_rows(sections[2]) == [list(CHILD_COLUMNS)]
    assert sections[3] == "Total: 0 children, 0 busy, 0 jobs done, memory (USS) -"


def test_missing_fields_shown_as_dash():
    # A master of another release may send fewer fields.
    reply = {
        "ok": True,
        "master": {"pid": 9},
        "tasks": [{"task": "a"}],
        "children": [{"task": "a", "slot": 1}],
    }

    sections = split_sections(render_status(reply))

    assert sections[0] == "Pool master pid 9, uptime -, state running, servers -"
    assert table_rows(sections[1])[1] == ["a", "-", "-", "-", "-", "ok"]
    assert table_rows(sections[2])[1] == ["a", "1", "-", "-", "-", "-", "-", "-", "-", "-"]
    assert sections[3] == "Total: - children, - busy, - jobs done, memory (USS) -"


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (None, "-"),
        (0, "0.0 s"),
        (-2.0, "0.0 s"),
        (3.24, "3.2 s"),
        (59.94, "59.9 s"),
        (59.96, "1 min"),
        (60, "1 min"),
        (119.9, "1 min"),
        (720, "12 min"),
        (3599, "59 min"),
        (3599.96, "1.0 h"),
        (3600, "1.0 h"),
        (7200, "2.0 h"),
        (47.9 * 3600, "47.9 h"),
        (48 * 3600, "2.0 d"),
        (30 * 86400, "30.0 d"),
    ],
)
def test_format_duration(seconds, expected):
    assert format_duration(seconds) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (None, "-"),
        (0, "0.0 MiB"),
        (1048576, "1.0 MiB"),
        (12345678, "11.8 MiB"),
        (5 * 1024**3, "5120.0 MiB"),
    ],
)
def test_format_memory(size, expected):
    assert format_memory(size) == expected


def test_status_to_json_drops_ok():
    text = status_to_json(STATUS_REPLY)

    expected = {key: value for key, value in STATUS_REPLY.items() if key != "ok"}
    assert json.loads(text) == expected
    assert "ok" not in json.loads(text)
    assert list(json.loads(text)) == ["master", "tasks", "children", "totals"]


def test_status_to_json_keeps_reply():
    reply = copy.deepcopy(STATUS_REPLY)

    status_to_json(reply)

    assert reply == STATUS_REPLY
