"""systemd's notification protocol (sd_notify): one datagram to $NOTIFY_SOCKET.

With Type=notify, systemd waits for READY=1 before it considers the service started,
and RELOADING=1 / READY=1 frame a reload. Without NOTIFY_SOCKET nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger(__name__)


def notify(*fields: str) -> bool:
    """Send "KEY=value" fields to systemd; return False when no service manager listens."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        # An abstract socket: Linux marks it with a leading NUL byte.
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto("\n".join(fields).encode(), address)
    except OSError as exc:
        logger.warning("Cannot notify systemd at %s: %s (pid %s)", os.environ.get("NOTIFY_SOCKET"), exc, os.getpid())
        return False
    return True
