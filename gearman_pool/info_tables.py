"""Render server reports from ``server_info.collect_reports`` as text tables or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prettytable import PrettyTable

if TYPE_CHECKING:
    from gearman_pool.server_info import ServerReport

SERVER_COLUMNS = ("Server", "Version", "Response time")
TASK_COLUMNS = ("Task", "Workers", "Running", "Queued")
WORKER_COLUMNS = ("Worker IP", "Client ID", "Tasks", "File descriptor")


def render_reports(reports: Sequence[ServerReport]) -> str:
    """Render each server as a server table, then its task and worker tables.

    A server whose report has an error gets only the server table, whose row reads
    ``unavailable: <reason>``. The text ends with a newline.
    """
    sections = []
    for report in reports:
        sections.append(_server_table(report).get_string())
        if report.error is None:
            sections.append(_task_table(report).get_string())
            sections.append(_worker_table(report).get_string())
    return "\n\n".join(sections) + "\n" if sections else ""


def _server_table(report: ServerReport) -> PrettyTable:
    table = PrettyTable(SERVER_COLUMNS)
    table.align = "l"
    table.align["Response time"] = "r"
    if report.error is not None:
        table.add_row([str(report.address), f"unavailable: {report.error}", "-"])
    else:
        response_time = _format_milliseconds(report.response_time)
        table.add_row([str(report.address), report.version or "-", response_time])
    return table


def _task_table(report: ServerReport) -> PrettyTable:
    table = PrettyTable(TASK_COLUMNS)
    table.align = "r"
    table.align["Task"] = "l"
    for status in report.tasks:
        table.add_row([status.task, status.workers, status.running, status.queued])
    return table


def _worker_table(report: ServerReport) -> PrettyTable:
    table = PrettyTable(WORKER_COLUMNS)
    table.align = "l"
    table.align["File descriptor"] = "r"
    for worker in report.workers:
        table.add_row([worker.ip, worker.client_id, ", ".join(worker.tasks), worker.fd])
    return table


def _format_milliseconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.1f} ms"


def reports_to_json(reports: Sequence[ServerReport]) -> str:
    """Serialize reports as ``{"servers": [...]}`` with a fixed key order.

    ``response_time_ms`` is in milliseconds, rounded to 3 decimals. Like ``version``, it
    is null when the server did not reply.
    """
    servers = []
    for report in reports:
        response_time_ms = None
        if report.response_time is not None:
            response_time_ms = round(report.response_time * 1000, 3)
        servers.append(
            {
                "address": str(report.address),
                "version": report.version,
                "response_time_ms": response_time_ms,
                "error": report.error,
                "tasks": [
                    {
                        "task": status.task,
                        "workers": status.workers,
                        "running": status.running,
                        "queued": status.queued,
                        "total": status.total,
                    }
                    for status in report.tasks
                ],
                "workers": [
                    {
                        "fd": worker.fd,
                        "ip": worker.ip,
                        "client_id": worker.client_id,
                        "tasks": list(worker.tasks),
                    }
                    for worker in report.workers
                ],
            }
        )
    return json.dumps({"servers": servers}, indent=2)
