"""Render the pool master's status reply as text tables or JSON.

The renderer reads every field with a default ("-" in the tables) because the status
command and the running master can come from different releases, for example after a
deploy that has not yet reloaded the pool.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from prettytable import PrettyTable

TASK_COLUMNS = ("Task", "Configured", "Children", "Busy", "Restarts", "State")
CHILD_COLUMNS = (
    "Task",
    "Slot",
    "PID",
    "State",
    "Job",
    "Job time",
    "Jobs",
    "Memory",
    "Age",
    "Restarts",
)
MISSING = "-"
MEBIBYTE = 1024 * 1024


def render_status(reply: Mapping) -> str:
    """Render the pool line, the task table, the child table and the totals line.

    The text ends with a newline.
    """
    sections = [
        _pool_line(reply.get("master") or {}),
        _task_table(reply.get("tasks") or []).get_string(),
        _child_table(reply.get("children") or []).get_string(),
        _totals_line(reply.get("totals") or {}),
    ]
    return "\n\n".join(sections) + "\n"


def status_to_json(reply: Mapping) -> str:
    """Serialize the status reply without its "ok" key, indented by 2 spaces."""
    return json.dumps({key: value for key, value in reply.items() if key != "ok"}, indent=2)


def format_duration(seconds) -> str:
    """Format seconds as "3.2 s" below a minute, "12 min" below an hour, "2.0 h" below
    two days and "3.5 d" above. Minutes are rounded down. Returns "-" for None.
    """
    if seconds is None:
        return MISSING
    # Rounding first keeps 59.96 s from showing as "60.0 s" or as "0 min".
    seconds = round(max(float(seconds), 0.0), 1)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if round(seconds / 3600, 1) < 48:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def format_memory(size) -> str:
    """Format a size in bytes as MiB with one decimal, e.g. "11.8 MiB". Returns "-" for None."""
    if size is None:
        return MISSING
    return f"{size / MEBIBYTE:.1f} MiB"


def _pool_line(master: Mapping) -> str:
    flags = [flag for flag in ("stopping", "reloading") if master.get(flag)]
    state = ", ".join(flags) if flags else "running"
    servers = ", ".join(master.get("servers") or []) or MISSING
    uptime = format_duration(master.get("uptime"))
    pid = master.get("pid", MISSING)
    return f"Pool master pid {pid}, uptime {uptime}, state {state}, servers {servers}"


def _task_table(tasks) -> PrettyTable:
    table = PrettyTable(TASK_COLUMNS)
    table.align = "r"
    table.align["Task"] = "l"
    table.align["State"] = "l"
    for task in sorted(tasks, key=lambda task: str(task.get("task", ""))):
        table.add_row(
            [
                task.get("task", MISSING),
                task.get("configured", MISSING),
                task.get("children", MISSING),
                task.get("busy", MISSING),
                task.get("restarts", MISSING),
                "failed" if task.get("failed") else "ok",
            ]
        )
    return table


def _child_sort_key(child: Mapping):
    # Within a slot, the current child comes before a previous-generation child that a
    # reload is stopping.
    slot = child.get("slot")
    return (
        str(child.get("task", "")),
        slot if isinstance(slot, int) else -1,
        child.get("generation") == "previous",
        child.get("pid") or 0,
    )


def _child_state(child: Mapping) -> str:
    state = child.get("state") or MISSING
    if child.get("generation") == "previous":
        return f"{state} (old code)"
    return state


def _child_table(children) -> PrettyTable:
    table = PrettyTable(CHILD_COLUMNS)
    table.align = "r"
    for column in ("Task", "State", "Job"):
        table.align[column] = "l"
    for child in sorted(children, key=_child_sort_key):
        table.add_row(
            [
                child.get("task", MISSING),
                child.get("slot", MISSING),
                child.get("pid", MISSING),
                _child_state(child),
                child.get("job_handle") or MISSING,
                format_duration(child.get("job_seconds")),
                child.get("jobs_done", MISSING),
                format_memory(child.get("memory_uss")),
                format_duration(child.get("age")),
                child.get("slot_restarts", MISSING),
            ]
        )
    return table


def _totals_line(totals: Mapping) -> str:
    children = totals.get("children", MISSING)
    busy = totals.get("busy", MISSING)
    jobs_done = totals.get("jobs_done", MISSING)
    memory = format_memory(totals.get("memory_uss"))
    return f"Total: {children} children, {busy} busy, {jobs_done} jobs done, memory (USS) {memory}"
