"""Process titles, shown by ps and top.

With the optional setproctitle package the whole command line shows the role, e.g.
"gearman_pool: data_import #2 busy". Without it, Linux still gets a short process name
(the one `ps -o comm` and `pkill` match), which distinguishes the master from its
children.
"""

import ctypes
import sys

try:
    from setproctitle import setproctitle as _setproctitle
except ImportError:
    _setproctitle = None

PR_SET_NAME = 15
# Linux keeps 15 bytes of a process name.
MAX_NAME_LENGTH = 15


def set_process_name(name: str) -> bool:
    """Set the kernel's short name of this process; return False where it is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_NAME, name.encode()[:MAX_NAME_LENGTH], 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def set_process_title(title: str, name: str | None = None) -> bool:
    """Set the title to "gearman_pool: <title>" and the short name to ``name``.

    Returns False when setproctitle is missing and only the short name was set.
    """
    if name is not None:
        set_process_name(name)
    if _setproctitle is None:
        return False
    _setproctitle(f"gearman_pool: {title}")
    return True
