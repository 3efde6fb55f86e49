"""Tests of send_control_request against a fake control socket server."""

from __future__ import annotations

import json
import math
import os
import socket
import time

import pytest

from gearman_pool.errors import GearmanError
from gearman_pool.pool.control_client import (
    MAX_REPLY_SIZE,
    ControlError,
    positive_seconds,
    send_control_request,
)
from tests.fake_control import FakeControlServer

STATUS_REQUEST = {"command": "status"}
SCALE_REPLY = {"ok": True, "task": "data_import", "previous": 4, "count": 6}
# Upper bound in seconds for a request with a short timeout to fail, thread scheduling included.
TIMEOUT_MARGIN = 2.0


@pytest.fixture
def server(tmp_path):
    server = FakeControlServer(tmp_path / "control.sock")
    yield server
    server.stop()


def not_listening_message(path) -> str:
    return (
        f"no gearman_pool master is listening on {path}: start the pool, "
        "or pass --control-socket with the path the pool uses"
    )


def test_request_line_status(server):
    server.reply({"ok": True})

    send_control_request(server.path, STATUS_REQUEST)

    assert server.requests == [b'{"command": "status"}\n']


def test_request_line_scale_count(server):
    server.reply(SCALE_REPLY)

    send_control_request(str(server.path), {"command": "scale", "task": "data_import", "count": 6})

    assert server.requests == [b'{"command": "scale", "task": "data_import", "count": 6}\n']


def test_request_line_scale_delta(server):
    server.reply(SCALE_REPLY)

    send_control_request(server.path, {"command": "scale", "task": "data_import", "delta": -1})

    assert server.requests == [b'{"command": "scale", "task": "data_import", "delta": -1}\n']


def test_request_serialized_with_json_dumps(server):
    request = {"command": "scale", "task": "r\u00e9sum\u00e9", "delta": 2}
    server.reply({"ok": True})

    send_control_request(server.path, request)

    assert server.requests == [(json.dumps(request) + "\n").encode()]
    assert b"\\u00e9" in server.requests[0]


def test_reply_parsed_as_dict(server):
    server.reply(SCALE_REPLY)

    reply = send_control_request(
        server.path, {"command": "scale", "task": "data_import", "count": 6}
    )

    assert reply == SCALE_REPLY


def test_one_connection_per_request(server):
    server.reply({"ok": True, "n": 1})
    server.reply({"ok": True, "n": 2})

    first = send_control_request(server.path, STATUS_REQUEST)
    second = send_control_request(server.path, STATUS_REQUEST)

    assert first["n"] == 1
    assert second["n"] == 2
    assert server.connections == 2


def test_reply_without_newline_before_eof(server):
    server.raw(b'{"ok": true, "value": 7}')

    reply = send_control_request(server.path, STATUS_REQUEST)

    assert reply == {"ok": True, "value": 7}


def test_bytes_after_newline_ignored(server):
    server.raw(b'{"ok": true}\nnot json at all\n')

    reply = send_control_request(server.path, STATUS_REQUEST)

    assert reply == {"ok": True}


def test_reply_in_pieces_joined(server):
    server.pieces([b'{"ok": tr', b'ue, "text": "a', b'b"}', b"\n"], delay=0.02)

    reply = send_control_request(server.path, STATUS_REQUEST)

    assert reply == {"ok": True, "text": "ab"}


def test_large_reply_accepted(server):
    children = [{"task": "data_import", "slot": slot, "pid": 10000 + slot} for slot in range(20000)]
    server.reply({"ok": True, "children": children})

    reply = send_control_request(server.path, STATUS_REQUEST)

    assert len(reply["children"]) == 20000
    assert reply["children"][-1] == {"task": "data_import", "slot": 19999, "pid": 29999}


def test_non_ascii_reply(server):
    server.raw('{"ok": true, "task": "r\u00e9sum\u00e9"}\n'.encode())

    reply = send_control_request(server.path, STATUS_REQUEST)

    assert reply["task"] == "r\u00e9sum\u00e9"


def test_control_error_is_gearman_error():
    assert issubclass(ControlError, GearmanError)


def test_missing_socket_file(tmp_path):
    path = tmp_path / "missing.sock"

    with pytest.raises(ControlError) as caught:
        send_control_request(path, STATUS_REQUEST)

    assert str(caught.value) == not_listening_message(path)
    assert caught.value.path == str(path)
    assert caught.value.reply is None


def test_missing_socket_directory(tmp_path):
    path = tmp_path / "no-such-dir" / "control.sock"

    with pytest.raises(ControlError) as caught:
        send_control_request(path, STATUS_REQUEST)

    assert str(caught.value) == not_listening_message(path)


def test_stale_socket_file(tmp_path):
    path = tmp_path / "stale.sock"
    # A socket file whose listener is gone, as a master killed with SIGKILL leaves it.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    assert path.exists()

    with pytest.raises(ControlError) as caught:
        send_control_request(path, STATUS_REQUEST)

    message = str(caught.value)
    assert message.startswith(f"no gearman_pool master is listening on {path} (connection refused")
    assert message.endswith("start the pool, or pass --control-socket with the path the pool uses")
    assert "\n" not in message


def test_regular_file_instead_of_socket(tmp_path):
    path = tmp_path / "not-a-socket"
    path.write_text("plain file")

    with pytest.raises(ControlError) as caught:
        send_control_request(path, STATUS_REQUEST)

    assert str(caught.value).startswith(f"no gearman_pool master is listening on {path}")


def test_path_too_long(tmp_path):
    path = tmp_path / ("x" * 120 + ".sock")

    with pytest.raises(ControlError) as caught:
        send_control_request(path, STATUS_REQUEST)

    message = str(caught.value)
    assert message.startswith(f"cannot connect to the control socket {path}: ")
    assert "too long" in message
    assert message.endswith("Check the --control-socket path")


@pytest.mark.skipif(os.geteuid() == 0, reason="root connects to a socket without write permission")
def test_permission_denied(server):
    os.chmod(server.path, 0)

    with pytest.raises(ControlError) as caught:
        send_control_request(server.path, STATUS_REQUEST)

    assert str(caught.value).startswith(
        f"permission denied connecting to the control socket {server.path}"
    )


def test_timeout_while_master_hangs(server):
    server.hang()

    started = time.monotonic()
    with pytest.raises(ControlError) as caught:
        send_control_request(server.path, STATUS_REQUEST, timeout=0.3)
    elapsed = time.monotonic() - started

    assert str(caught.value) == (
        f"timed out after 0.3 s waiting for the reply of the gearman_pool master on {server.path}: "
        "the master may be busy or hung. Retry with a larger --timeout"
    )
    assert 0.3 <= elapsed < 0.3 + TIMEOUT_MARGIN


def test_timeout_caps_total_time(server):
    # Each piece arrives well within the timeout, but the whole reply does not.
    server.pieces([b" "] * 100 + [b'{"ok": true}\n'], delay=0.05)

    started = time.monotonic()
    with pytest.raises(ControlError) as caught:
        send_control_request(server.path, STATUS_REQUEST, timeout=0.5)
    elapsed = time.monotonic() - started

    assert str(caught.value).startswith("timed out after 0.5 s waiting for the reply")
    assert elapsed < 0.5 + TIMEOUT_MARGIN


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf])
def test_invalid_timeout_rejected(server, timeout):
    with pytest.raises(ValueError, match="invalid timeout"):
        send_control_request(server.path, STATUS_REQUEST, timeout=timeout)

    assert server.connections == 0


def test_close_before_read(server):
    server.close_before_read()

    with pytest.raises(ControlError) as caught:
        send_control_request(server.path, STATUS_REQUEST)

    # Depending on timing, the client sees the close when it sends the request or when it
    # reads the reply.
    assert f"the gearman_pool master on {server.path} closed the connection" in str(caught.value)


def test_close_after_read_without_reply(server):
    server.close_after_read()

    with pytest.raises(ControlError) as caught:
        send_control_request(server.path, STATUS_REQUEST)

    assert str(caught.value) == (
        f"the gearman_pool master on {server.path} closed the connection without a reply: "
        "check the pool's log"
    )


def test_truncated_reply(server):
    server.raw(b'{"ok": tr')

    with pytest.raises(ControlError) as caught:
        send_control_request(server.path, STATUS_REQUEST)

    message = str(caught.value)
    assert message.startswith(
        f"invalid reply from the gearman_pool master on {server.path}: not JSON ("
    )
    assert message.endswith("""'{"ok": tr'""")


@pytest.mark.parametrize(
    "data",
    [b"garbage\n", b"\n", b"\xff\xfe\n", b'{"ok": true,}\n'],
    ids=["text", "empty-line", "invalid-utf8", "trailing-comma"],
)
def test_reply_not_json(server, data):
    server.raw(data)

    with pytest.raises(ControlError) as caught:
        send_control_request(server.path, STATUS_REQUEST)

    assert str(caught.value).startswith(
        f"invalid reply from the gearman_pool master on {server.path}: not JSON ("
    )


def test_long_invalid_reply_quoted_shortened(server):
    server.raw(b"x" * 1000 + b"\n")

    with pytest.raises(ControlError) as caught:
        send_control_request(server.path, STATUS_REQUEST)

    message = str(caught.value)
    assert "x" * 200 + "..." in message
    assert "x" * 201 not in message


@pytest.mark.parametrize(
    "data",
    [b"[1, 2]\n", b'"ok"\n', b'{"status": "running"}\n', b'{"ok": "yes"}\n', b'{"ok": 1}\n'],
    ids=["list", "string", "no-ok", "ok-string", "ok-number"],
)
def test_reply_without_boolean_ok(server, data):
    server.raw(data)

    with pytest.raises(ControlError) as caught:
        send_control_request(server.path, STATUS_REQUEST)

    assert str(caught.value).startswith(
        f'invalid reply from the gearman_pool master on {server.path}: expected a JSON object with a boolean "ok"'
    )


def test_reply_over_size_limit(server):
    server.raw(b"x" * (MAX_REPLY_SIZE + 2 * 65536))

    with pytest.raises(ControlError) as caught:
        send_control_request(server.path, STATUS_REQUEST, timeout=30.0)

    assert str(caught.value) == (
        f"invalid reply from the gearman_pool master on {server.path}: more than 16 MiB without a newline"
    )


def test_ok_false_raises_master_error(server):
    rejection = {
        "ok": False,
        "error": "unknown task 'nope': the pool runs data_import, send_invoices",
    }
    server.reply(rejection)

    with pytest.raises(ControlError) as caught:
        send_control_request(server.path, {"command": "scale", "task": "nope", "count": 1})

    assert str(caught.value) == "unknown task 'nope': the pool runs data_import, send_invoices"
    assert caught.value.reply == rejection
    assert caught.value.path == str(server.path)


@pytest.mark.parametrize(
    "rejection", [{"ok": False}, {"ok": False, "error": ""}, {"ok": False, "error": 3}]
)
def test_ok_false_without_message(server, rejection):
    server.reply(rejection)

    with pytest.raises(ControlError) as caught:
        send_control_request(server.path, STATUS_REQUEST)

    message = str(caught.value)
    assert message.startswith(
        "the gearman_pool master rejected the request without an error message: "
    )
    assert repr(rejection) in message


@pytest.mark.parametrize(("text", "expected"), [("5", 5.0), ("0.25", 0.25), ("1e1", 10.0)])
def test_positive_seconds_accepts(text, expected):
    assert positive_seconds(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "", "five"])
def test_positive_seconds_rejects(text):
    with pytest.raises(ValueError):
        positive_seconds(text)
