"""Database connections across fork(): the master closes them, a child discards copies."""

from __future__ import annotations

import logging
import os

from django.db import connections

logger = logging.getLogger(__name__)


def close_connections_before_fork() -> None:
    """Close every database connection of this process, so no child inherits a socket."""
    connections.close_all()


def discard_inherited_connections() -> None:
    """Drop database connections copied from the parent, without touching its sessions.

    Closing an inherited libpq or MySQL connection normally sends a terminate message
    over the shared socket, which would end the parent's session too. Pointing the
    descriptor at /dev/null first makes that message go nowhere. Then Django's wrapper
    is reset so the child opens its own connection on first use.
    """
    for wrapper in connections.all(initialized_only=True):
        alias = wrapper.alias
        raw = getattr(wrapper, "connection", None)
        if raw is None:
            continue
        descriptor = _socket_descriptor(raw)
        if descriptor is not None:
            null = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(null, descriptor)
            finally:
                os.close(null)
        try:
            wrapper.close()
        except Exception:
            # The copy is unusable by design; a failure to close it cleanly only means
            # the wrapper must be reset by hand.
            logger.debug("Closing inherited connection %r failed (pid %s)", alias, os.getpid(), exc_info=True)
        wrapper.connection = None


def _socket_descriptor(raw) -> int | None:
    # psycopg 3 and psycopg2 connections expose fileno(); so does mysqlclient. SQLite
    # has no socket.
    fileno = getattr(raw, "fileno", None)
    if fileno is None:
        pgconn = getattr(raw, "pgconn", None)
        fileno = getattr(pgconn, "socket", None)
        return fileno if isinstance(fileno, int) else None
    try:
        descriptor = fileno()
    except Exception:
        return None
    return descriptor if isinstance(descriptor, int) and descriptor >= 0 else None
