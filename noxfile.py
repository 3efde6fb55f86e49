"""The test matrix: the full suite (runtests.py) on each supported Python and Django pair.

    nox                                  # every session, one after the other
    nox -s "tests(3.12-django6)"         # one session; `nox --list` shows the names
    nox -s tests -- -k pool -x           # arguments after -- go to pytest

nox looks for ``python3.10`` ... ``python3.13`` on PATH; `make matrix` puts the pyenv
interpreters there first. Each session installs the package with the ``test`` extra and
one Django series, then runs runtests.py, which starts its own gearmand on a free loopback
port. The database tests need the PostgreSQL and MariaDB servers that README.rst names.
"""

from __future__ import annotations

import nox

# (Python, Django series, pip requirement). 4.2 and 5.2 are the LTS series. "6" takes the
# newest 6.x release, which needs Python 3.12 or later.
MATRIX = [
    ("3.10", "4.2", "Django>=4.2,<4.3"),
    ("3.11", "5.2", "Django>=5.2,<5.3"),
    ("3.12", "5.2", "Django>=5.2,<5.3"),
    ("3.12", "6", "Django>=6.0,<7"),
    ("3.13", "6", "Django>=6.0,<7"),
]

# Printed before the tests, so that the log names the versions that pip installed.
VERSIONS_SCRIPT = (
    "import sys, django; print('Python', sys.version.split()[0], 'Django', django.__version__)"
)

nox.options.sessions = ["tests"]
# A failed session does not stop the others, so one run reports every pair.
nox.options.stop_on_first_error = False


@nox.session
@nox.parametrize(
    "python,django",
    [
        nox.param(python, requirement, id=f"{python}-django{series}")
        for python, series, requirement in MATRIX
    ],
)
def tests(session: nox.Session, django: str) -> None:
    """Run the test suite on one Python and Django pair."""
    session.install("-e", ".[test]", django)
    session.run("python", "-c", VERSIONS_SCRIPT)
    session.run("python", "runtests.py", *session.posargs)
