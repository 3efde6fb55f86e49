"""Fixtures of the fault-injection tests, and the summary table printed at the end of the run.

Each scenario adds one row to the ``fault_report`` fixture. pytest_terminal_summary()
prints the rows as a reStructuredText simple table, whatever the capture mode, and writes
them as JSON to the path in the FAULTS_REPORT environment variable when it is set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os

import psycopg
import pytest

from tests.faults.support import POSTGRES_ADDRESS, FaultDatabase

REPORT_ENV = "FAULTS_REPORT"

report_key = pytest.StashKey[list]()


@dataclasses.dataclass
class ScenarioReport:
    """One row of the summary table. A column that does not apply to a scenario is None.

    - ``submitted``: jobs that gearmand accepted.
    - ``submit_errors``: submits that raised because gearmand was down.
    - ``failed``: jobs that ended as failures: a JobFailed, a job that gearmand dropped, or
      an exception in do_job.
    - ``lost``: accepted jobs that never ran.
    - ``duplicates``: jobs that ran more than once.
    - ``children``: "live/configured" at the end, or how many children a pool forked when
      it must not start at all.
    """

    scenario: str
    submitted: int | None = None
    submit_errors: int | None = None
    completed: int | None = None
    failed: int | None = None
    lost: int | None = None
    duplicates: int | None = None
    children: str | None = None
    seconds: float | None = None
    notes: str = ""

    def cells(self) -> list[str]:
        values = [
            self.submitted,
            self.submit_errors,
            self.completed,
            self.failed,
            self.lost,
            self.duplicates,
            self.children,
            None if self.seconds is None else f"{self.seconds:.1f}",
        ]
        return [
            self.scenario,
            *("-" if value is None else str(value) for value in values),
            self.notes,
        ]


COLUMNS = [
    "scenario",
    "submitted",
    "submit errors",
    "completed",
    "failed",
    "lost",
    "duplicates",
    "children",
    "seconds",
    "notes",
]


def render_table(rows: list[ScenarioReport]) -> list[str]:
    """Return the lines of a reStructuredText simple table of ``rows``.

    The last column may run past its border line, which simple tables allow.
    """
    table = [COLUMNS, *(row.cells() for row in rows)]
    widths = [max(len(cells[index]) for cells in table) for index in range(len(COLUMNS) - 1)]
    widths.append(len(COLUMNS[-1]))
    border = " ".join("=" * width for width in widths)

    def line(cells: list[str]) -> str:
        padded = [cell.ljust(width) for cell, width in zip(cells[:-1], widths, strict=False)]
        return " ".join([*padded, cells[-1]]).rstrip()

    return [border, line(COLUMNS), border, *(line(cells) for cells in table[1:]), border]


class FaultReport:
    """Collects the scenario rows of one pytest session."""

    def __init__(self, rows: list):
        self.rows = rows

    def add(self, row: ScenarioReport) -> ScenarioReport:
        self.rows.append(row)
        # Shown with -s, and kept in the captured output of the test otherwise.
        print("fault scenario: " + " | ".join(row.cells()))
        return row


@pytest.fixture(scope="session")
def fault_report(request) -> FaultReport:
    return FaultReport(request.config.stash.setdefault(report_key, []))


@pytest.fixture(scope="session")
def fault_db() -> FaultDatabase:
    """The completion table in gearman_pool_faults; this session's rows are deleted at the end."""
    database = FaultDatabase()
    try:
        database.create()
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL on {POSTGRES_ADDRESS} (user postgres, trust authentication) is "
            f"unreachable: {exc}. The fault-injection tests record job completions there; "
            "start it, e.g. with `pg_ctlcluster <version> main start`.",
            pytrace=False,
        )
    yield database
    for prefix in database.prefixes:
        with contextlib.suppress(psycopg.OperationalError):
            database.delete(prefix)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    rows = config.stash.get(report_key, None)
    if not rows:
        return
    # Sorted by scenario number, which starts each name; sorted() keeps the order within one.
    rows = sorted(rows, key=lambda row: int(row.scenario.split()[0]))
    terminalreporter.section("fault-injection scenarios")
    for line in render_table(rows):
        terminalreporter.write_line(line)
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "w", encoding="utf-8") as file:
            json.dump([dataclasses.asdict(row) for row in rows], file, indent=2)
            file.write("\n")
        terminalreporter.write_line(f"fault-injection table written as JSON to {path}")
