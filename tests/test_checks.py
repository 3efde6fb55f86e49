"""Tests for the system checks of the GEARMAN_* settings (gearman_pool.E001 to E005)."""

from unittest import mock

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from gearman_pool.checks import check_settings


def error_ids(errors):
    return [error.id for error in errors]


def test_test_settings_give_no_errors():
    assert check_settings() == []


def test_valid_settings_give_no_errors(settings):
    settings.GEARMAN_SERVERS = ["127.0.0.1:4731", "gearman.internal", "[::1]:4732", "10.0.0.1:4733"]
    settings.GEARMAN_CLIENT_NAMESPACE = "staging"
    settings.GEARMAN_CONNECT_TIMEOUT = 0.5
    settings.GEARMAN_POOL_WORKERS = {"echo": 1, "gearman_worker_sleep": 4}

    assert check_settings() == []


def test_missing_settings_give_no_errors(settings):
    del settings.GEARMAN_SERVERS
    for name in ("GEARMAN_CLIENT_NAMESPACE", "GEARMAN_CONNECT_TIMEOUT", "GEARMAN_POOL_WORKERS"):
        if hasattr(settings, name):
            delattr(settings, name)

    assert check_settings() == []


def test_servers_tuple_gives_no_errors(settings):
    settings.GEARMAN_SERVERS = ("127.0.0.1:4731",)

    assert check_settings() == []


@pytest.mark.parametrize("servers", [[], "127.0.0.1:4731", {"host": "127.0.0.1"}, 4731])
def test_e001_servers_not_list(settings, servers):
    settings.GEARMAN_SERVERS = servers

    errors = check_settings()

    assert error_ids(errors) == ["gearman_pool.E001"]
    assert repr(servers) in errors[0].msg
    assert "GEARMAN_SERVERS" in errors[0].msg


@pytest.mark.parametrize("address", ["127.0.0.1:port", "127.0.0.1:70000", "::1:4730", "[::1", "", 4731])
def test_e002_invalid_address(settings, address):
    settings.GEARMAN_SERVERS = ["127.0.0.1:4731", address]

    errors = check_settings()

    assert error_ids(errors) == ["gearman_pool.E002"]
    assert repr(address) in errors[0].msg
    assert errors[0].hint


def test_e002_reports_every_invalid_address(settings):
    settings.GEARMAN_SERVERS = ["127.0.0.1:one", "127.0.0.1:4731", "127.0.0.1:two"]

    errors = check_settings()

    assert error_ids(errors) == ["gearman_pool.E002", "gearman_pool.E002"]
    assert "'127.0.0.1:one'" in errors[0].msg
    assert "'127.0.0.1:two'" in errors[1].msg


@pytest.mark.parametrize("namespace", ["has space", "tab\there", "nul\x00byte", 42, ["staging"]])
def test_e003_invalid_namespace(settings, namespace):
    settings.GEARMAN_CLIENT_NAMESPACE = namespace

    errors = check_settings()

    assert error_ids(errors) == ["gearman_pool.E003"]
    assert repr(namespace) in errors[0].msg


@pytest.mark.parametrize("timeout", [0, -1, -0.5, "5", True, float("nan")])
def test_e004_invalid_connect_timeout(settings, timeout):
    settings.GEARMAN_CONNECT_TIMEOUT = timeout

    errors = check_settings()

    assert error_ids(errors) == ["gearman_pool.E004"]
    assert repr(timeout) in errors[0].msg


@pytest.mark.parametrize("workers", [["echo"], "echo=2", 3])
def test_e005_pool_workers_not_dict(settings, workers):
    settings.GEARMAN_POOL_WORKERS = workers

    errors = check_settings()

    assert error_ids(errors) == ["gearman_pool.E005"]
    assert repr(workers) in errors[0].msg


@pytest.mark.parametrize(
    "name, count",
    [("echo", 0), ("echo", -2), ("echo", "2"), ("echo", 1.5), ("echo", True), ("", 1), (7, 1)],
)
def test_e005_invalid_pool_workers_entry(settings, name, count):
    settings.GEARMAN_POOL_WORKERS = {"sleep": 2, name: count}

    errors = check_settings()

    assert error_ids(errors) == ["gearman_pool.E005"]
    assert repr(name) in errors[0].msg
    assert repr(count) in errors[0].msg


def test_errors_of_all_settings_reported(settings):
    settings.GEARMAN_SERVERS = ["127.0.0.1:port"]
    settings.GEARMAN_CLIENT_NAMESPACE = "a b"
    settings.GEARMAN_CONNECT_TIMEOUT = 0
    settings.GEARMAN_POOL_WORKERS = {"echo": 0}

    assert error_ids(check_settings()) == [
        "gearman_pool.E002",
        "gearman_pool.E003",
        "gearman_pool.E004",
        "gearman_pool.E005",
    ]


def test_check_command_reports_invalid_address():
    with (
        override_settings(GEARMAN_SERVERS=["127.0.0.1:notaport"]),
        mock.patch("socket.create_connection") as create_connection,
        pytest.raises(SystemCheckError) as excinfo,
    ):
        call_command("check")

    assert "gearman_pool.E002" in str(excinfo.value)
    assert "'127.0.0.1:notaport'" in str(excinfo.value)
    create_connection.assert_not_called()


def test_check_command_passes_with_valid_settings(capsys):
    call_command("check")

    assert "no issues" in capsys.readouterr().out
