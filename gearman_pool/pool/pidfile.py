"""The master's pid file: written atomically, never stolen from a live pool, removed only
by the process it names."""

from __future__ import annotations

import errno
import logging
import os
import stat
import tempfile


logger = logging.getLogger(__name__)


class PidfileError(RuntimeError):
    """The pid file cannot be written, or names another running pool."""


def _read_pid(path: str) -> int | None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PidfileError(f"cannot read pid file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        # Opening a FIFO would block forever, and a directory or device is never ours.
        raise PidfileError(f"pid file {path} exists and is not a regular file; remove it or choose another path")
    try:
        with open(path, encoding="ascii") as file:
            text = file.read().strip()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        # A pool writes ASCII digits, so a file that is not ASCII is stale.
        return None
    except OSError as exc:
        raise PidfileError(f"cannot read pid file {path}: {exc}") from None
    return int(text) if text.isdigit() else None


def _is_running_pool(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        # OverflowError means the number is too large to be a process id.
        return False
    except PermissionError:
        pass
    # A stale file may name a pid that the kernel has since given to an unrelated
    # process. On Linux the command line distinguishes them.
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return b"gearman_pool" in file.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True


class Pidfile:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def create(self, pid: int) -> None:
        """Write ``pid``, replacing a stale file; raise PidfileError if a pool runs."""
        existing = _read_pid(self.path)
        if existing is not None and existing != pid and not _is_running_pool(existing):
            logger.info("Replacing stale pid file %s: process %s is not a running pool", self.path, existing)
        elif existing is None and os.path.exists(self.path):
            logger.info("Replacing pid file %s, which contains no pid", self.path)
        if existing is not None and existing != pid and _is_running_pool(existing):
            raise PidfileError(
                f"pid file {self.path} names running gearman_pool process {existing}; "
                "stop that pool first, or use another --pidfile"
            )
        directory = os.path.dirname(self.path)
        try:
            descriptor, temporary = tempfile.mkstemp(prefix=".pidfile-", dir=directory)
        except OSError as exc:
            raise PidfileError(f"cannot write pid file {self.path}: {exc.strerror or exc}") from None
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as file:
                file.write(f"{pid}\n")
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o644)
            os.replace(temporary, self.path)
        except OSError as exc:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            message = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
            raise PidfileError(f"cannot write pid file {self.path}: {message}") from None

    def remove(self, pid: int) -> None:
        """Delete the file if it still names ``pid``; a file naming another process stays."""
        try:
            if _read_pid(self.path) == pid:
                os.unlink(self.path)
        except (OSError, PidfileError):
            pass
