"""Tests of the text and JSON rendering and of the gearman_server_info command."""

from __future__ import annotations

import io
import json
import threading
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from gearman_pool.address import ServerAddress
from gearman_pool.client import GearmanClient
from gearman_pool.info_tables import render_reports, reports_to_json
from gearman_pool.server_info import ServerReport, TaskStatus, WorkerInfo, collect_report
from gearman_pool.worker import GearmanWorker
from tests.helpers import closed_port_address, table_rows, wait_until

WAIT_TIMEOUT = 10.0

HEALTHY = ServerReport(
    address=ServerAddress("127.0.0.1", 40001),
    version="1.1.20+ds",
    response_time=0.00125,
    tasks=[TaskStatus("resize", total=7, running=2, workers=3), TaskStatus("send_mail", 0, 0, 1)],
    workers=[
        WorkerInfo(fd=32, ip="127.0.0.1", client_id="w1", tasks=("resize", "thumbnail")),
        WorkerInfo(fd=33, ip="127.0.0.2", client_id="-", tasks=("send_mail",)),
    ],
)
DOWN = ServerReport(
    address=ServerAddress("127.0.0.1", 40002),
    error="cannot connect to Gearman server 127.0.0.1:40002: connection refused",
)


def run_server_info(*args: str) -> str:
    stdout = io.StringIO()
    call_command("gearman_server_info", *args, stdout=stdout)
    return stdout.getvalue()


def run_failing_server_info(*args: str) -> tuple[str, CommandError]:
    stdout = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("gearman_server_info", *args, stdout=stdout)
    return stdout.getvalue(), raised.value


def submit_background_jobs(address: str, task: str, count: int) -> None:
    with GearmanClient([ServerAddress.parse(address)]) as client:
        for number in range(count):
            client.submit_job(task.encode(), str(number).encode())


# Rendering -------------------------------------------------------------------------------


def test_render_healthy_server_tables():
    rows = table_rows(render_reports([HEALTHY]))

    assert rows[0] == ["Server", "Version", "Response time"]
    assert rows[1] == ["127.0.0.1:40001", "1.1.20+ds", "1.2 ms"]
    assert rows[2] == ["Task", "Workers", "Running", "Queued"]
    assert rows[3] == ["resize", "3", "2", "5"]
    assert rows[4] == ["send_mail", "1", "0", "0"]
    assert rows[5] == ["Worker IP", "Client ID", "Tasks", "File descriptor"]
    assert rows[6] == ["127.0.0.1", "w1", "resize, thumbnail", "32"]
    assert rows[7] == ["127.0.0.2", "-", "send_mail", "33"]
    assert len(rows) == 8


def test_render_down_server_row():
    rows = table_rows(render_reports([DOWN, HEALTHY]))

    assert rows[0] == ["Server", "Version", "Response time"]
    assert rows[1] == ["127.0.0.1:40002", f"unavailable: {DOWN.error}", "-"]
    # The down server has no task or worker table, so the next table is the healthy server's.
    assert rows[2] == ["Server", "Version", "Response time"]
    assert rows[3][0] == "127.0.0.1:40001"


def test_render_empty_server_has_headers():
    empty = ServerReport(
        address=ServerAddress("127.0.0.1", 40003), version="1.1.20+ds", response_time=0.0
    )
    rows = table_rows(render_reports([empty]))

    assert rows == [
        ["Server", "Version", "Response time"],
        ["127.0.0.1:40003", "1.1.20+ds", "0.0 ms"],
        ["Task", "Workers", "Running", "Queued"],
        ["Worker IP", "Client ID", "Tasks", "File descriptor"],
    ]


def test_render_no_reports_is_empty():
    assert render_reports([]) == ""


def test_render_replacement_character():
    report = ServerReport(
        address=ServerAddress("127.0.0.1", 40004),
        version="1.1.20+ds",
        response_time=0.001,
        tasks=[TaskStatus("q\ufffdname", 1, 0, 0)],
    )

    assert "q\ufffdname" in render_reports([report])


def test_json_structure_and_key_order():
    document = json.loads(reports_to_json([HEALTHY, DOWN]))

    assert list(document) == ["servers"]
    healthy, down = document["servers"]
    assert list(healthy) == ["address", "version", "response_time_ms", "error", "tasks", "workers"]
    assert healthy["address"] == "127.0.0.1:40001"
    assert healthy["version"] == "1.1.20+ds"
    assert healthy["response_time_ms"] == 1.25
    assert healthy["error"] is None
    assert healthy["tasks"][0] == {
        "task": "resize",
        "workers": 3,
        "running": 2,
        "queued": 5,
        "total": 7,
    }
    assert list(healthy["tasks"][0]) == ["task", "workers", "running", "queued", "total"]
    assert healthy["workers"][0] == {
        "fd": 32,
        "ip": "127.0.0.1",
        "client_id": "w1",
        "tasks": ["resize", "thumbnail"],
    }
    assert list(healthy["workers"][0]) == ["fd", "ip", "client_id", "tasks"]
    assert down == {
        "address": "127.0.0.1:40002",
        "version": None,
        "response_time_ms": None,
        "error": DOWN.error,
        "tasks": [],
        "workers": [],
    }


def test_json_is_stable():
    assert reports_to_json([HEALTHY]) == reports_to_json([HEALTHY])


# gearman_server_info command -------------------------------------------------------------


def test_command_json_counts(gearmand_address):
    task = f"json-{uuid.uuid4().hex}"
    submit_background_jobs(gearmand_address, task, 4)

    document = json.loads(run_server_info(task, "--json", "--server", gearmand_address))

    assert len(document["servers"]) == 1
    server = document["servers"][0]
    assert server["address"] == gearmand_address
    assert server["error"] is None
    assert server["version"]
    assert server["response_time_ms"] >= 0
    assert server["tasks"] == [{"task": task, "workers": 0, "running": 0, "queued": 4, "total": 4}]
    assert server["workers"] == []


def test_command_table_shows_queued_task(gearmand_address):
    task = f"table-{uuid.uuid4().hex}"
    submit_background_jobs(gearmand_address, task, 2)

    rows = table_rows(run_server_info(task, "--server", gearmand_address))

    assert rows[1][0] == gearmand_address
    assert [task, "0", "0", "2"] in rows


def test_command_uses_gearman_servers_setting(gearmand_address, settings):
    settings.GEARMAN_SERVERS = [gearmand_address]
    task = f"setting-{uuid.uuid4().hex}"
    submit_background_jobs(gearmand_address, task, 1)

    document = json.loads(run_server_info(task, "--json"))

    assert [server["address"] for server in document["servers"]] == [gearmand_address]
    assert document["servers"][0]["tasks"][0]["queued"] == 1


def test_command_lists_two_task_worker_once(gearmand_address):
    first = f"first-{uuid.uuid4().hex}"
    second = f"second-{uuid.uuid4().hex}"
    client_id = f"client-{uuid.uuid4().hex}"
    address = ServerAddress.parse(gearmand_address)
    handlers = {first.encode(): lambda job: b"", second.encode(): lambda job: b""}
    worker = GearmanWorker([address], handlers, client_id=client_id)
    thread = threading.Thread(target=worker.work, daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: collect_report(address, task_filter=first).workers,
            timeout=WAIT_TIMEOUT,
            message="the worker to register",
        )
        rows = table_rows(run_server_info(first, "--server", gearmand_address))
    finally:
        worker.request_stop()
        thread.join(WAIT_TIMEOUT)
        worker.close()

    worker_rows = [row for row in rows if len(row) == 4 and row[1] == client_id]
    assert len(worker_rows) == 1
    ip, _client_id, tasks, fd = worker_rows[0]
    assert ip == "127.0.0.1"
    assert tasks == ", ".join(sorted([first, second]))
    assert fd.isdigit()


def test_command_down_and_live_server(gearmand_address):
    down = str(closed_port_address())

    output, error = run_failing_server_info(
        "--server", down, "--server", gearmand_address, "--timeout", "2"
    )

    rows = table_rows(output)
    server_cells = [row[0] for row in rows if row[0] in (down, gearmand_address)]
    assert server_cells == [down, gearmand_address]
    down_row = next(row for row in rows if row[0] == down)
    assert down_row[1].startswith("unavailable: ")
    live_row = next(row for row in rows if row[0] == gearmand_address)
    assert live_row[1] != "-"
    assert "Task" in output
    assert down in str(error)
    assert "1 of 2 Gearman servers unavailable" in str(error)
    assert "\n" not in str(error)


def test_command_json_printed_before_error(gearmand_address):
    down = str(closed_port_address())

    output, error = run_failing_server_info(
        "--json", "--server", gearmand_address, "--server", down
    )

    document = json.loads(output)
    assert [server["address"] for server in document["servers"]] == [gearmand_address, down]
    assert document["servers"][0]["error"] is None
    assert "connection refused" in document["servers"][1]["error"]
    assert down in str(error)


@pytest.mark.parametrize("value", ["127.0.0.1:notaport", "127.0.0.1:70000", "::1:4730", ":4730"])
def test_command_invalid_server(value):
    output, error = run_failing_server_info("--server", value)

    assert repr(value) in str(error)
    assert output == ""


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "inf"])
def test_command_invalid_timeout(value):
    down = str(closed_port_address())

    output, error = run_failing_server_info("--server", down, "--timeout", value)

    assert "--timeout" in str(error)
    assert value in str(error)
    assert output == ""


def test_manage_py_down_server_exits_nonzero(run_manage):
    down = str(closed_port_address())

    result = run_manage("gearman_server_info", env={"GEARMAN_TEST_SERVER": down})

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert down in result.stderr
    assert "unavailable: " in result.stdout
    assert down in result.stdout


def test_manage_py_live_server_exits_zero(run_manage, gearmand_address):
    task = f"manage-{uuid.uuid4().hex}"
    submit_background_jobs(gearmand_address, task, 1)

    result = run_manage("gearman_server_info", task, "--json")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    document = json.loads(result.stdout)
    assert document["servers"][0]["tasks"][0]["queued"] == 1
