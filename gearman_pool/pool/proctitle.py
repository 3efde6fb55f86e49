"""Process titles, shown by ps and top, when the optional setproctitle package is present."""

try:
    from setproctitle import setproctitle as _setproctitle
except ImportError:
    _setproctitle = None


def set_process_title(title: str) -> bool:
    """Set the process title to "gearman_pool: <title>"; return False without setproctitle."""
    if _setproctitle is None:
        return False
    _setproctitle(f"gearman_pool: {title}")
    return True
