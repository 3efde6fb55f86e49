"""Client of the pool master's control socket.

The protocol is one request per connection: the client sends one line of JSON ending in
"\\n" and reads one line of JSON, which the master sends before it closes the connection.
Every reply has a boolean "ok". A reply with "ok": false carries an "error" message.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time

from gearman_pool.errors import GearmanError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
# A status reply has one JSON object of about 200 bytes per child, so 16 MiB is far more than
# any pool needs. The limit stops a peer that never sends a newline from filling the memory.
MAX_REPLY_SIZE = 16 * 1024 * 1024
RECV_SIZE = 64 * 1024
# Characters of an invalid reply quoted in the error message.
QUOTED_REPLY_LENGTH = 200


class ControlError(GearmanError):
    """A control request failed, or the pool master rejected it.

    ``path`` is the control socket. ``reply`` is the master's reply when it had "ok": false,
    and None for every other failure.
    """

    def __init__(self, message: str, *, path: str | None = None, reply: dict | None = None):
        super().__init__(message)
        self.path = path
        self.reply = reply


def positive_seconds(text: str) -> float:
    """Parse a --timeout value: a finite number of seconds greater than zero.

    Raises ValueError otherwise. argparse reports that error with this function's name.
    """
    try:
        value = float(text)
    except ValueError:
        value = None
    # "not value > 0" also rejects NaN.
    if value is None or not value > 0 or math.isinf(value):
        raise ValueError(text)
    return value


positive_seconds.__name__ = "positive number of seconds"


def send_control_request(path, request: dict, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Send one request to the pool master listening on ``path`` and return its reply.

    ``timeout`` is the limit in seconds for the whole exchange: connect, send and receive.
    The reply is returned only when it is a JSON object with "ok": true. Raises ControlError
    when no master listens on ``path``, on a timeout, on a reply that is not valid, and with
    the master's message when the reply has "ok": false.
    """
    path = os.fspath(path)
    if not (isinstance(timeout, (int, float)) and timeout > 0 and not math.isinf(timeout)):
        raise ValueError(f"invalid timeout {timeout!r}: expected a positive number of seconds")
    data = (json.dumps(request) + "\n").encode("utf-8")
    deadline = time.monotonic() + timeout

    logger.debug("Sending control request %s to %s", request.get("command"), path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        _connect(sock, path, deadline, timeout)
        _send(sock, path, data, deadline, timeout)
        raw_reply = _receive_line(sock, path, deadline, timeout)

    reply = _parse_reply(path, raw_reply)
    logger.debug("Control reply from %s: %d bytes, ok=%s", path, len(raw_reply), reply["ok"])
    if not reply["ok"]:
        raise ControlError(_rejection_message(reply), path=path, reply=reply)
    return reply


def _remaining(deadline: float) -> float:
    """Return the seconds left before ``deadline``, raising TimeoutError when none are."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("timed out")
    return remaining


def _not_listening(path: str, detail: str = "") -> ControlError:
    return ControlError(
        f"no gearman_pool master is listening on {path}{detail}: start the pool, "
        "or pass --control-socket with the path the pool uses",
        path=path,
    )


def _timed_out(path: str, timeout: float, step: str) -> ControlError:
    return ControlError(
        f"timed out after {timeout:g} s {step} the gearman_pool master on {path}: "
        "the master may be busy or hung. Retry with a larger --timeout",
        path=path,
    )


def _connect(sock: socket.socket, path: str, deadline: float, timeout: float) -> None:
    try:
        sock.settimeout(_remaining(deadline))
        sock.connect(path)
    except FileNotFoundError:
        raise _not_listening(path) from None
    except ConnectionRefusedError:
        # Connecting to a socket file whose listener has exited, or to a file that is not a
        # socket, raises ECONNREFUSED on Linux.
        raise _not_listening(
            path, " (connection refused, so the file is left from a stopped pool or is no socket)"
        ) from None
    except TimeoutError:
        raise _timed_out(path, timeout, "connecting to") from None
    except PermissionError:
        raise ControlError(
            f"permission denied connecting to the control socket {path}: run the command as the "
            "user that runs the pool",
            path=path,
        ) from None
    except OSError as exc:
        # For example ENOTDIR, or a path longer than the unix socket limit (107 bytes on Linux).
        raise ControlError(
            f"cannot connect to the control socket {path}: {exc.strerror or exc}. "
            "Check the --control-socket path",
            path=path,
        ) from None


def _send(sock: socket.socket, path: str, data: bytes, deadline: float, timeout: float) -> None:
    try:
        sock.settimeout(_remaining(deadline))
        sock.sendall(data)
    except TimeoutError:
        raise _timed_out(path, timeout, "sending the request to") from None
    except (BrokenPipeError, ConnectionResetError):
        raise ControlError(
            f"the gearman_pool master on {path} closed the connection before it read the request: "
            "check the pool's log",
            path=path,
        ) from None
    except OSError as exc:
        raise ControlError(f"sending the request to {path} failed: {exc}", path=path) from None


def _receive_line(sock: socket.socket, path: str, deadline: float, timeout: float) -> bytes:
    """Read until the first newline or EOF and return the bytes before the newline."""
    buffer = bytearray()
    received = 0
    while True:
        try:
            sock.settimeout(_remaining(deadline))
            chunk = sock.recv(RECV_SIZE)
        except TimeoutError:
            raise _timed_out(path, timeout, "waiting for the reply of") from None
        except ConnectionResetError:
            chunk = b""
        except OSError as exc:
            raise ControlError(f"reading the reply from {path} failed: {exc}", path=path) from None

        if not chunk:
            break
        received += len(chunk)
        newline = chunk.find(b"\n")
        if newline >= 0:
            buffer += chunk[:newline]
        else:
            buffer += chunk
        if len(buffer) > MAX_REPLY_SIZE:
            raise ControlError(
                f"invalid reply from the gearman_pool master on {path}: more than "
                f"{MAX_REPLY_SIZE // (1024 * 1024)} MiB without a newline",
                path=path,
            )
        if newline >= 0:
            break

    if not received:
        raise ControlError(
            f"the gearman_pool master on {path} closed the connection without a reply: "
            "check the pool's log",
            path=path,
        )
    return bytes(buffer)


def _parse_reply(path: str, raw_reply: bytes) -> dict:
    quoted = raw_reply[:QUOTED_REPLY_LENGTH].decode("utf-8", "replace")
    if len(raw_reply) > QUOTED_REPLY_LENGTH:
        quoted += "..."
    try:
        reply = json.loads(raw_reply.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ControlError(
            f"invalid reply from the gearman_pool master on {path}: not JSON ({exc}): {quoted!r}",
            path=path,
        ) from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ControlError(
            f"invalid reply from the gearman_pool master on {path}: expected a JSON object with a "
            f'boolean "ok", got {quoted!r}',
            path=path,
        )
    return reply


def _rejection_message(reply: dict) -> str:
    error = reply.get("error")
    if isinstance(error, str) and error.strip():
        return error
    return f"the gearman_pool master rejected the request without an error message: {reply!r}"


def add_control_arguments(parser, timeout_help: str) -> None:
    """Add --control-socket and --timeout, shared by the operator commands."""
    parser.add_argument(
        "--control-socket",
        metavar="PATH",
        help="Unix socket of the pool master (default: the GEARMAN_POOL_CONTROL_SOCKET "
        "setting, or a path in the temp directory derived from the user and settings module).",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"{timeout_help} (default: {DEFAULT_TIMEOUT:g}).",
    )
