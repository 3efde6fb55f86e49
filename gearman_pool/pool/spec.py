"""Which worker commands the pool runs, and how many children each: parsing and discovery."""

from __future__ import annotations

import dataclasses
import re
import traceback

from django.core.management import get_commands, load_command_class

from gearman_pool.jobs import InvalidWorkerCommand, resolve_task_name
from gearman_pool.pool.limits import TaskLimits
from gearman_pool.worker_command import GearmanWorkerBaseCommand

COMMAND_PREFIX = "gearman_worker_"
# Maximum children per task; a typo such as 1000000000 must not fork the machine to death.
MAX_CHILDREN_PER_TASK = 1000


class PoolConfigurationError(ValueError):
    """Invalid --workers or GEARMAN_POOL_WORKERS input, or a broken worker command."""


@dataclasses.dataclass(frozen=True)
class WorkerCommandInfo:
    command_name: str
    app_name: str
    task_name: str


@dataclasses.dataclass(frozen=True)
class PoolEntry:
    """One task served by ``count`` children, each running ``command_name``."""

    command_name: str
    app_name: str
    task_name: str
    count: int
    limits: TaskLimits = TaskLimits()


def discover_worker_commands() -> dict[str, WorkerCommandInfo]:
    """Import every ``gearman_worker_*`` command and return them by command name.

    An import error is not hidden: it becomes a PoolConfigurationError naming the
    command, with the original exception (file and line for a SyntaxError) chained.
    """
    found = {}
    for command_name, app_name in sorted(get_commands().items()):
        if not command_name.startswith(COMMAND_PREFIX):
            continue
        try:
            command = load_command_class(app_name, command_name)
        except Exception as exc:
            raise PoolConfigurationError(
                f"cannot import worker command {command_name!r} of app {app_name!r}: {describe_import_error(exc)}"
            ) from exc
        if not isinstance(command, GearmanWorkerBaseCommand):
            continue
        try:
            task_name = resolve_task_name(command)
        except InvalidWorkerCommand as exc:
            raise PoolConfigurationError(str(exc)) from None
        found[command_name] = WorkerCommandInfo(command_name, app_name, task_name)
    return found


def describe_import_error(exc: Exception) -> str:
    """Name the exception and the file and line where it was raised."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def parse_workers_option(text: str) -> list[tuple[str, str | None]]:
    """Split "name=count,name=count" into (name, count text) pairs.

    An entry without "=" gets the count None, so that resolve_entries() reports it
    together with every other problem.
    """
    entries = [part.strip() for part in text.split(",")]
    if not text.strip() or not any(entries):
        raise PoolConfigurationError("--workers is empty: give NAME=COUNT pairs, e.g. --workers data_import=4")
    pairs = []
    for entry in entries:
        if not entry:
            raise PoolConfigurationError(f"--workers {text!r} contains an empty entry; remove the extra comma")
        name, separator, count = entry.partition("=")
        pairs.append((name.strip(), count.strip() if separator else None))
    return pairs


def resolve_entries(pairs, discovered: dict[str, WorkerCommandInfo]) -> list[PoolEntry]:
    """Match (name, count) pairs to worker commands; a name is a task or a command name.

    Collects every problem and raises one PoolConfigurationError listing them all,
    followed by the valid names.
    """
    by_task = {info.task_name: info for info in discovered.values()}
    problems = []
    entries = []
    seen = {}
    for name, count_value in pairs:
        if count_value is None:
            problems.append(f"entry {name!r} has no count; expected NAME=COUNT, e.g. {name}=2")
            continue
        info = discovered.get(name) or by_task.get(name)
        if info is None:
            problems.append(f"unknown worker {name!r}")
            continue
        count = _parse_count(name, count_value, problems)
        if count is None:
            continue
        if info.command_name in seen:
            problems.append(f"{name!r} repeats {seen[info.command_name]!r}; name each task once")
            continue
        seen[info.command_name] = name
        entries.append(PoolEntry(info.command_name, info.app_name, info.task_name, count))

    if not pairs:
        problems.append("no workers given")
    if problems:
        raise PoolConfigurationError(f"invalid --workers: {'; '.join(problems)}. {describe_valid_names(discovered)}")
    return entries


def describe_valid_names(discovered: dict[str, WorkerCommandInfo]) -> str:
    if not discovered:
        return (
            "No worker commands were found: add a gearman_worker_<task> command "
            "subclassing GearmanWorkerBaseCommand to an installed app."
        )
    names = ", ".join(f"{info.task_name} ({info.command_name})" for info in discovered.values())
    return f"Valid names: {names}."


def _parse_count(name, value, problems) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        count = value
    elif isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        # Only ASCII digits: int() would also take "٢", "1_0" and "１".
        count = int(value.strip())
    else:
        problems.append(f"count {value!r} for {name!r} is not an integer")
        return None
    if count < 1:
        problems.append(f"count {count} for {name!r} is below 1")
        return None
    if count > MAX_CHILDREN_PER_TASK:
        problems.append(f"count {count} for {name!r} is above the maximum of {MAX_CHILDREN_PER_TASK}")
        return None
    return count
