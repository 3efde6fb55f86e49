"""Make the test run fail on a DeprecationWarning from the project's own code.

pyproject.toml turns such warnings into errors inside pytest, but two cases need more:

- Python 3.12 and later warn when ``os.fork()`` runs in a process with more than one
  thread. ``os.fork()`` discards an error raised by that warning, so an "error" filter hides
  it instead of failing. pyproject.toml shows it with "always" instead, and conftest.py
  records it and fails the run at the end.
- The pools and commands that tests start are separate processes, which pytest's filters do
  not reach. ``install()``, called from the test app's ``ready()``, turns the project's
  DeprecationWarnings into errors there, and appends each fork warning to the file that
  WARNING_LOG_ENV names, which conftest.py reads at the end of the run.
"""

from __future__ import annotations

import os
import re
import warnings

WARNING_LOG_ENV = "GEARMAN_POOL_TEST_WARNING_LOG"
PROJECT_MODULES = r"(gearman_pool|django_gearman_commands)(\.|$)"
# CPython 3.12 to 3.13: "This process (pid=123) is multi-threaded, use of fork() may lead to
# deadlocks in the child."
FORK_WITH_THREADS = r"This process \(pid=\d+\) is multi-threaded"


def is_fork_with_threads(message: Warning | str) -> bool:
    return re.match(FORK_WITH_THREADS, str(message)) is not None


def install() -> None:
    """Set the warning filters of a process that a test started.

    It runs in ``ready()``, after Django's logging set-up, because that set-up adds a
    "default" filter for Django's next-version DeprecationWarning, which would otherwise
    take precedence, and points ``warnings.showwarning`` at logging.
    """
    warnings.filterwarnings("error", category=DeprecationWarning, module=PROJECT_MODULES)
    warnings.filterwarnings("always", message=FORK_WITH_THREADS, category=DeprecationWarning)

    log_path = os.environ.get(WARNING_LOG_ENV)
    if not log_path:
        return
    show_previous = warnings.showwarning

    def show_and_record(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DeprecationWarning) and is_fork_with_threads(message):
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"pid {os.getpid()}: {filename}:{lineno}: {message}\n")
        show_previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show_and_record


def read_log(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as log:
            return [line.rstrip("\n") for line in log if line.strip()]
    except FileNotFoundError:
        return []
