"""Logging set-up for the long-running commands."""

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def ensure_log_handler(level=logging.INFO) -> None:
    """Send gearman_pool's records to stderr unless LOGGING already routes them.

    Django's default LOGGING configures only the "django" logger, so without this the
    pool's INFO lifecycle lines would be dropped. A project whose LOGGING gives
    "gearman_pool" or the root logger a handler keeps full control.
    """
    package_logger = logging.getLogger("gearman_pool")
    if package_logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    package_logger.addHandler(handler)
    if package_logger.level == logging.NOTSET:
        package_logger.setLevel(level)
