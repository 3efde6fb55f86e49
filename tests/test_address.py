"""ServerAddress.parse and parse_servers: accepted forms and the errors for bad input."""

import pytest

from gearman_pool.address import DEFAULT_PORT, ServerAddress, parse_servers
from gearman_pool.errors import InvalidServerAddress


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1", "127.0.0.1", 4730),
        ("127.0.0.1:4731", "127.0.0.1", 4731),
        ("gearman.example.com", "gearman.example.com", 4730),
        ("gearman.example.com:1", "gearman.example.com", 1),
        ("localhost:65535", "localhost", 65535),
        ("[::1]:4730", "::1", 4730),
        ("[::1]:9000", "::1", 9000),
        ("[::1]", "::1", 4730),
        ("[fe80::1%eth0]:4730", "fe80::1%eth0", 4730),
        ("  127.0.0.1:4731\n", "127.0.0.1", 4731),
        ("\t[::1]:4731 ", "::1", 4731),
    ],
)
def test_parse_valid(text, host, port):
    address = ServerAddress.parse(text)

    assert address.host == host
    assert address.port == port


def test_parse_default_port_is_4730():
    assert DEFAULT_PORT == 4730
    assert ServerAddress.parse("127.0.0.1").port == 4730
    assert ServerAddress("127.0.0.1").port == 4730


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (ServerAddress("127.0.0.1", 4731), "127.0.0.1:4731"),
        (ServerAddress("::1", 4730), "[::1]:4730"),
    ],
)
def test_str_round_trips(address, text):
    assert str(address) == text
    assert ServerAddress.parse(str(address)) == address


def test_address_is_hashable_value():
    first = ServerAddress.parse("127.0.0.1:4731")
    second = ServerAddress.parse("127.0.0.1:4731")

    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second}) == 1
    with pytest.raises(AttributeError):
        first.port = 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:0", "port '0'"),
        ("127.0.0.1:65536", "port '65536'"),
        ("127.0.0.1:abc", "port 'abc'"),
        ("127.0.0.1:", "port ''"),
        ("127.0.0.1:-1", "port '-1'"),
        ("127.0.0.1:+80", "port '+80'"),
        ("127.0.0.1: 4730", "port ' 4730'"),
        ("127.0.0.1:4730.0", "port '4730.0'"),
        # Digits outside ASCII pass str.isdigit(), and int() even accepts some of them.
        ("127.0.0.1:\u0664\u0667\u0663\u0660", "port"),
        ("127.0.0.1:\u00b2", "port"),
        ("[::1]:0", "port '0'"),
        ("[::1]:", "port ''"),
        ("[::1]:99999", "port '99999'"),
    ],
)
def test_parse_bad_port(text, expected):
    with pytest.raises(InvalidServerAddress) as info:
        ServerAddress.parse(text)

    message = str(info.value)
    assert repr(text) in message
    assert expected in message
    assert "1 to 65535" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[::1", "missing ']'"),
        ("[::1:4730", "missing ']'"),
        ("[::1]4730", "expected ':port' after ']'"),
        ("[::1] :4730", "expected ':port' after ']'"),
        ("::1", "in brackets"),
        ("::1:4730", "in brackets"),
        ("fe80::1", "in brackets"),
        ("2001:db8::1:4730", "in brackets"),
        ("", "host is empty"),
        ("   ", "host is empty"),
        (":4730", "host is empty"),
        ("[]", "host is empty"),
        ("[]:4730", "host is empty"),
        ("bad host", "white space"),
        ("bad host:4730", "white space"),
        ("127.0.0.1 :4730", "white space"),
        ("bad\thost", "white space"),
    ],
)
def test_parse_bad_host(text, expected):
    with pytest.raises(InvalidServerAddress) as info:
        ServerAddress.parse(text)

    message = str(info.value)
    assert repr(text) in message
    assert expected in message


@pytest.mark.parametrize("value", [4730, None, b"127.0.0.1:4730", ("127.0.0.1", 4730), 4.5])
def test_parse_non_string(value):
    with pytest.raises(InvalidServerAddress) as info:
        ServerAddress.parse(value)

    message = str(info.value)
    assert repr(value) in message
    assert "expected a string" in message


def test_invalid_address_is_value_error():
    with pytest.raises(ValueError):
        ServerAddress.parse("127.0.0.1:0")


def test_parse_servers_list():
    addresses = parse_servers(["127.0.0.1:4731", "[::1]", "gearman.example.com:4732"])

    assert addresses == [
        ServerAddress("127.0.0.1", 4731),
        ServerAddress("::1", 4730),
        ServerAddress("gearman.example.com", 4732),
    ]


def test_parse_servers_tuple():
    assert parse_servers(("127.0.0.1:4731",)) == [ServerAddress("127.0.0.1", 4731)]


def test_parse_servers_empty_list():
    with pytest.raises(InvalidServerAddress) as info:
        parse_servers([])

    assert "empty" in str(info.value)


def test_parse_servers_plain_string():
    with pytest.raises(InvalidServerAddress) as info:
        parse_servers("127.0.0.1:4731")

    message = str(info.value)
    assert "'127.0.0.1:4731'" in message
    assert "expected a list" in message


def test_parse_servers_names_bad_entry():
    with pytest.raises(InvalidServerAddress) as info:
        parse_servers(["127.0.0.1:4731", "127.0.0.1:99999"])

    assert "'127.0.0.1:99999'" in str(info.value)


def test_parse_servers_non_string_entry():
    with pytest.raises(InvalidServerAddress) as info:
        parse_servers(["127.0.0.1:4731", 4732])

    assert "4732" in str(info.value)
