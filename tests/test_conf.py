"""Tests for gearman_pool.conf: settings read from django.conf.settings on every access."""

import pytest
from django.test import override_settings

from gearman_pool.address import ServerAddress
from gearman_pool.conf import DEFAULT_CONNECT_TIMEOUT, gearman_settings
from gearman_pool.errors import InvalidServerAddress


def test_override_settings_changes_servers_and_namespace():
    servers_before = gearman_settings.servers

    with override_settings(GEARMAN_SERVERS=["127.0.0.1:7001", "[::1]:7002"], GEARMAN_CLIENT_NAMESPACE="staging"):
        assert gearman_settings.servers == [ServerAddress("127.0.0.1", 7001), ServerAddress("::1", 7002)]
        assert gearman_settings.namespace == "staging"
        assert gearman_settings.namespaced("echo") == "echo@staging"

    assert gearman_settings.servers == servers_before
    assert gearman_settings.namespace is None
    assert gearman_settings.namespaced("echo") == "echo"


def test_settings_fixture_changes_values(settings):
    settings.GEARMAN_SERVERS = ["127.0.0.1:7003"]
    settings.GEARMAN_CLIENT_NAMESPACE = "ns"
    settings.GEARMAN_CONNECT_TIMEOUT = 2
    settings.GEARMAN_POOL_WORKERS = {"echo": 3}

    assert gearman_settings.servers == [ServerAddress("127.0.0.1", 7003)]
    assert gearman_settings.namespace == "ns"
    assert gearman_settings.connect_timeout == 2.0
    assert isinstance(gearman_settings.connect_timeout, float)
    assert gearman_settings.pool_workers == {"echo": 3}


def test_defaults_without_settings(settings):
    del settings.GEARMAN_SERVERS
    for name in ("GEARMAN_CLIENT_NAMESPACE", "GEARMAN_CONNECT_TIMEOUT", "GEARMAN_POOL_WORKERS"):
        if hasattr(settings, name):
            delattr(settings, name)

    # Parsing the default address connects nowhere.
    assert gearman_settings.servers == [ServerAddress("127.0.0.1", 4730)]
    assert gearman_settings.namespace is None
    assert gearman_settings.connect_timeout == DEFAULT_CONNECT_TIMEOUT
    assert gearman_settings.pool_workers == {}


def test_server_without_port_gets_default_port(settings):
    settings.GEARMAN_SERVERS = ["gearman.internal"]

    assert gearman_settings.servers == [ServerAddress("gearman.internal", 4730)]


@pytest.mark.parametrize("namespace", ["", None])
def test_empty_namespace_is_none(settings, namespace):
    settings.GEARMAN_CLIENT_NAMESPACE = namespace

    assert gearman_settings.namespace is None
    assert gearman_settings.namespaced("echo") == "echo"


def test_namespaced_appends_suffix(settings):
    settings.GEARMAN_CLIENT_NAMESPACE = "prod-eu"

    assert gearman_settings.namespaced("send_invoices") == "send_invoices@prod-eu"
    assert gearman_settings.namespaced("žluťoučký") == "žluťoučký@prod-eu"


def test_pool_workers_returns_copy(settings):
    settings.GEARMAN_POOL_WORKERS = {"echo": 2}

    workers = gearman_settings.pool_workers
    workers["echo"] = 99

    assert settings.GEARMAN_POOL_WORKERS == {"echo": 2}


@pytest.mark.parametrize(
    "servers",
    [["127.0.0.1:port"], ["127.0.0.1:0"], ["::1:4730"], ["[::1"], [""], "127.0.0.1:4730", []],
)
def test_malformed_servers_raise(settings, servers):
    settings.GEARMAN_SERVERS = servers

    with pytest.raises(InvalidServerAddress):
        gearman_settings.servers
