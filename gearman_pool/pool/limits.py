"""Per-task recycling limits of pool children: jobs, memory and job run time.

The command-line flags set pool-wide defaults; GEARMAN_POOL_LIMITS overrides them per
task, e.g. ``{"data_import": {"max_jobs": 500, "max_memory": "512M", "job_timeout": 600}}``.
"""

from __future__ import annotations

import dataclasses
import re

LIMIT_KEYS = ("max_jobs", "max_memory", "job_timeout")
# Random extra jobs per child, as a fraction of max_jobs, so that siblings started
# together do not all recycle at the same moment.
MAX_JOBS_JITTER = 0.1

_MEMORY_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_MEMORY_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)


class InvalidLimit(ValueError):
    """A limit that is not a positive number of the right kind."""


@dataclasses.dataclass(frozen=True)
class TaskLimits:
    """Limits of one task's children; None means no limit."""

    max_jobs: int | None = None
    max_memory: int | None = None
    job_timeout: float | None = None

    def describe(self) -> str:
        parts = []
        if self.max_jobs is not None:
            parts.append(f"max_jobs={self.max_jobs}")
        if self.max_memory is not None:
            parts.append(f"max_memory={format_bytes(self.max_memory)}")
        if self.job_timeout is not None:
            parts.append(f"job_timeout={self.job_timeout:g}s")
        return ", ".join(parts) or "no limits"


def parse_memory(value) -> int:
    """Parse a byte count: an integer, or a string such as "512M", "1.5G", "300MiB"."""
    if isinstance(value, bool):
        raise InvalidLimit(f"invalid memory limit {value!r}: give bytes or a size such as '512M'")
    if isinstance(value, int):
        size = value
    else:
        match = _MEMORY_PATTERN.match(str(value))
        if match is None:
            raise InvalidLimit(f"invalid memory limit {value!r}: give bytes or a size such as '512M' or '1G'")
        size = int(float(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()])
    if size <= 0:
        raise InvalidLimit(f"invalid memory limit {value!r}: it must be above 0")
    return size


def parse_max_jobs(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidLimit(f"invalid max_jobs {value!r}: give a whole number of jobs, 1 or more")
    try:
        count = int(value)
    except ValueError:
        raise InvalidLimit(f"invalid max_jobs {value!r}: give a whole number of jobs, 1 or more") from None
    if count < 1:
        raise InvalidLimit(f"invalid max_jobs {value!r}: give a whole number of jobs, 1 or more")
    return count


def parse_job_timeout(value) -> float:
    if isinstance(value, bool):
        raise InvalidLimit(f"invalid job_timeout {value!r}: give a positive number of seconds")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise InvalidLimit(f"invalid job_timeout {value!r}: give a positive number of seconds") from None
    if not 0 < seconds < float("inf"):
        raise InvalidLimit(f"invalid job_timeout {value!r}: give a positive number of seconds")
    return seconds


_PARSERS = {"max_jobs": parse_max_jobs, "max_memory": parse_memory, "job_timeout": parse_job_timeout}


def parse_limits(values: dict, where: str) -> dict:
    """Parse a {limit name: value} dict; None values mean "no limit"."""
    if not isinstance(values, dict):
        raise InvalidLimit(f"{where} must be a dict of limits such as {{'max_jobs': 500}}, got {values!r}")
    parsed = {}
    for key, value in values.items():
        if key not in _PARSERS:
            raise InvalidLimit(f"{where} has unknown limit {key!r}; use {', '.join(LIMIT_KEYS)}")
        parsed[key] = None if value is None else _PARSERS[key](value)
    return parsed


def resolve_limits(defaults: TaskLimits, per_task: dict, task_name: str) -> TaskLimits:
    """Apply the GEARMAN_POOL_LIMITS entry of ``task_name`` over the pool-wide defaults."""
    overrides = per_task.get(task_name)
    if overrides is None:
        return defaults
    return dataclasses.replace(defaults, **parse_limits(overrides, f"GEARMAN_POOL_LIMITS[{task_name!r}]"))


def format_bytes(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"
