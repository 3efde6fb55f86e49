"""Code reload on SIGHUP: validate in a fresh interpreter, then re-exec the master.

The master keeps its pid across execv(), so supervisord and systemd keep tracking it and
the children stay its children. The list of running children, with the descriptors of
their report pipes and scoreboard slots, crosses the exec in an environment variable. The new master forks a new generation from
the new code and stops each old child only after a new one reported ready.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile

logger = logging.getLogger(__name__)

INHERITED_CHILDREN_ENV = "GEARMAN_POOL_INHERITED_CHILDREN"
RELOAD_PENDING_ENV = "GEARMAN_POOL_RELOAD_PENDING"
CONTROL_FD_ENV = "GEARMAN_POOL_CONTROL_FD"
GEARMAND_PID_ENV = "GEARMAN_POOL_GEARMAND_PID"
HANDOVER_ENVS = (INHERITED_CHILDREN_ENV, RELOAD_PENDING_ENV, CONTROL_FD_ENV, GEARMAND_PID_ENV)
CHECK_OPTION = "--check"
# How much of a failed validation's output goes into the log, in characters.
VALIDATION_OUTPUT_TAIL = 4000


class Validation:
    """A `gearman_pool --check` process running the new code, started with posix_spawn.

    The master reaps it with its other children; ``finish(status)`` then reports.
    """

    def __init__(self, argv: list[str]):
        descriptor, self.output_path = tempfile.mkstemp(prefix="gearman_pool-check-", suffix=".log")
        try:
            actions = [
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, descriptor, 1),
                (os.POSIX_SPAWN_DUP2, descriptor, 2),
            ]
            environment = {key: value for key, value in os.environ.items() if key not in HANDOVER_ENVS}
            # An empty mask: the validator must not inherit signals the master holds
            # blocked, or a stop request could not end it.
            self.pid = os.posix_spawn(argv[0], [*argv, CHECK_OPTION], environment, file_actions=actions, setsigmask=set())
        finally:
            os.close(descriptor)

    def finish(self, status: int) -> tuple[bool, str]:
        """Return (passed, output tail) and delete the output file."""
        try:
            with open(self.output_path, encoding="utf-8", errors="replace") as file:
                output = file.read()
        except OSError as exc:
            output = f"(cannot read the validation output: {exc})"
        finally:
            try:
                os.unlink(self.output_path)
            except OSError:
                pass
        return os.waitstatus_to_exitcode(status) == 0, output[-VALIDATION_OUTPUT_TAIL:].strip()

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        self.finish(0)


def reexec_master(argv: list[str], children, reload_pending: bool, control_fd: int | None = None) -> None:
    """Replace this process image with a fresh master running the code on disk.

    Only returns by raising OSError when execv() fails; the caller keeps serving then.
    """
    inherited = []
    for child in children:
        if child.report_fd >= 0:
            os.set_inheritable(child.report_fd, True)
        scoreboard_fd = child.scoreboard.fd if child.scoreboard is not None else -1
        if scoreboard_fd >= 0:
            os.set_inheritable(scoreboard_fd, True)
        inherited.append(
            {
                "pid": child.pid,
                "task": child.task_name,
                "slot": child.slot,
                "fd": child.report_fd,
                "scoreboard_fd": scoreboard_fd,
                "started_at": child.started_at,
                "ready": child.ready,
            }
        )
    os.environ[INHERITED_CHILDREN_ENV] = json.dumps(inherited)
    if reload_pending:
        os.environ[RELOAD_PENDING_ENV] = "1"
    if control_fd is not None:
        os.environ[CONTROL_FD_ENV] = str(control_fd)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    for handler in logging.getLogger().handlers + logging.getLogger("gearman_pool").handlers:
        handler.flush()
    try:
        os.execv(argv[0], argv)
    except OSError:
        for name in HANDOVER_ENVS:
            os.environ.pop(name, None)
        raise


def take_inherited_children() -> tuple[list[dict], bool]:
    """Return the children a previous master image handed over, and whether another
    reload was requested during the last one; clear both from the environment."""
    text = os.environ.pop(INHERITED_CHILDREN_ENV, None)
    pending = os.environ.pop(RELOAD_PENDING_ENV, None) == "1"
    if not text:
        return [], pending
    try:
        children = json.loads(text)
    except ValueError:
        children = None
    if not isinstance(children, list):
        logger.error("Ignoring malformed %s=%r (pid %s)", INHERITED_CHILDREN_ENV, text[:200], os.getpid())
        return [], pending
    return [child for child in children if isinstance(child, dict) and isinstance(child.get("pid"), int)], pending


def take_control_fd() -> int | None:
    """Return the listening control socket a previous master image handed over."""
    text = os.environ.pop(CONTROL_FD_ENV, None)
    if text is None or not text.isdigit():
        return None
    return int(text)
