"""Logging set-up for the long-running commands."""

import logging
import os
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


def reopen_log_files() -> int:
    """Reopen the file of every logging.FileHandler, after logrotate moved it away.

    Returns how many files were reopened. Called from the main loop, never from a
    signal handler, because it takes the handlers' locks.
    """
    reopened = 0
    for handler in _file_handlers():
        handler.acquire()
        try:
            if handler.stream is not None:
                handler.stream.close()
            # FileHandler opens lazily when delay=True; _open() is how it does so too.
            handler.stream = handler._open()
            reopened += 1
        finally:
            handler.release()
    return reopened


class LogFileError(RuntimeError):
    """A log file of Django's LOGGING cannot be written."""


def _file_handlers():
    handlers = set(logging.getLogger().handlers)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        handlers.update(getattr(logger, "handlers", ()))
    return [handler for handler in handlers if isinstance(handler, logging.FileHandler)]


def check_log_files() -> None:
    """Raise LogFileError when a FileHandler's file cannot be opened or its disk is full.

    Logging itself reports a failed write as a "--- Logging error ---" traceback and
    drops the record, so a pool started on a full disk would run with no log at all.
    """
    for handler in _file_handlers():
        handler.acquire()
        try:
            if handler.stream is None:
                # A handler created with delay=True opens its file on the first record.
                handler.stream = handler._open()
            handler.stream.flush()
            if os.fstatvfs(handler.stream.fileno()).f_bavail == 0:
                raise LogFileError(f"cannot write log file {handler.baseFilename}: the disk is full")
        except OSError as exc:
            raise LogFileError(f"cannot write log file {handler.baseFilename}: {exc.strerror or exc}") from None
        finally:
            handler.release()
