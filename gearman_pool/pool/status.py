"""Replies of the master's control requests: the pool's status, and per-task scaling."""

from __future__ import annotations

import logging
import time

from gearman_pool.conf import gearman_settings
from gearman_pool.pool.spec import MAX_CHILDREN_PER_TASK

logger = logging.getLogger(__name__)



def child_memory(pid: int) -> int | None:
    """Return a child's unique set size (USS) in bytes, or None without psutil or access."""
    try:
        import psutil
    except ImportError:
        return None
    try:
        return psutil.Process(pid).memory_full_info().uss
    except (psutil.Error, OSError):
        return None


def build_status(master) -> dict:
    now = time.monotonic()
    children = []
    for child in sorted(master.children.values(), key=lambda child: (child.task_name, child.generation, child.slot)):
        children.append(
            {
                "task": child.task_name,
                "slot": child.slot,
                "pid": child.pid,
                "generation": child.generation,
                "state": child.state,
                "job_handle": child.job_handle,
                "job_seconds": None if child.job_started_at is None else round(now - child.job_started_at, 3),
                "jobs_done": child.jobs_done,
                "memory_uss": child_memory(child.pid),
                "age": round(now - child.started_at, 3),
                "slot_restarts": master.slot_restarts.get((child.task_name, child.slot), 0),
            }
        )

    tasks = []
    for task, count in master.counts.items():
        own = [row for row in children if row["task"] == task and row["generation"] == "current"]
        state = master.policy.state(task)
        tasks.append(
            {
                "task": task,
                "configured": count,
                "children": len(own),
                "busy": sum(1 for row in own if row["state"] == "busy"),
                "failed": state.failed,
                "boot_failures": state.boot_failures,
                "restarts": sum(restarts for (name, _slot), restarts in master.slot_restarts.items() if name == task),
            }
        )

    memory = [row["memory_uss"] for row in children]
    try:
        servers = [str(address) for address in gearman_settings.servers]
    except ValueError:
        servers = []
    return {
        "ok": True,
        "master": {
            "pid": master.pid,
            "started_at": master.started_at,
            "uptime": round(time.time() - master.started_at, 3),
            "stopping": master.stopping,
            "reloading": master.reloading or master.validation is not None,
            "servers": servers,
        },
        "tasks": tasks,
        "children": children,
        "totals": {
            "children": len(children),
            "busy": sum(1 for row in children if row["state"] == "busy"),
            "jobs_done": sum(row["jobs_done"] for row in children),
            "memory_uss": None if None in memory or not memory else sum(memory),
        },
    }


def scale_request(master, request: dict) -> dict:
    task = request.get("task")
    by_command = {entry.command_name: name for name, entry in master.entries.items()}
    task = by_command.get(task, task)
    if task not in master.counts:
        valid = ", ".join(sorted(master.counts))
        return {"ok": False, "error": f"unknown task {task!r}; this pool runs {valid}"}
    if master.stopping:
        return {"ok": False, "error": "the pool is stopping; scaling is not possible now"}
    current = master.counts[task]
    if "count" in request:
        count = request["count"]
    elif "delta" in request:
        delta = request["delta"]
        if isinstance(delta, bool) or not isinstance(delta, int):
            return {"ok": False, "error": f"invalid delta {delta!r}: give a whole number such as 1 or -1"}
        count = max(0, current + delta)
    else:
        return {"ok": False, "error": "a scale request needs 'count' or 'delta'"}
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_CHILDREN_PER_TASK:
        return {
            "ok": False,
            "error": f"invalid count {count!r} for task {task!r}: give a whole number from 0 to {MAX_CHILDREN_PER_TASK}",
        }
    previous = master.scale(task, count)
    return {"ok": True, "task": task, "previous": previous, "count": count}
