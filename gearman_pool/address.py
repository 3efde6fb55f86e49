"""Gearman server addresses: parsing "host:port" strings from settings and the command line."""

from __future__ import annotations

import dataclasses

from gearman_pool.errors import InvalidServerAddress

DEFAULT_PORT = 4730


@dataclasses.dataclass(frozen=True)
class ServerAddress:
    """A job server's host and TCP port."""

    host: str
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, text: str) -> ServerAddress:
        """Parse "host", "host:port", "[ipv6]" or "[ipv6]:port".

        Raises InvalidServerAddress naming the value and the expected form.
        """
        if not isinstance(text, str):
            raise InvalidServerAddress(
                f"invalid Gearman server address {text!r}: expected a string such as '127.0.0.1:4730'"
            )
        value = text.strip()
        host, port_text = _split_host_port(value, text)
        if not host:
            raise InvalidServerAddress(
                f"invalid Gearman server address {text!r}: the host is empty; use 'host:port', e.g. '127.0.0.1:4730'"
            )
        if any(char.isspace() for char in host):
            raise InvalidServerAddress(f"invalid Gearman server address {text!r}: the host contains white space")
        if port_text is None:
            return cls(host, DEFAULT_PORT)
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise InvalidServerAddress(
                f"invalid Gearman server address {text!r}: port {port_text!r} is not a number from 1 to 65535"
            )
        return cls(host, int(port_text))

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def _split_host_port(value: str, original: str) -> tuple[str, str | None]:
    if value.startswith("["):
        closing = value.find("]")
        if closing == -1:
            raise InvalidServerAddress(
                f"invalid Gearman server address {original!r}: missing ']' after the IPv6 host; use '[::1]:4730'"
            )
        host = value[1:closing]
        rest = value[closing + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise InvalidServerAddress(
                f"invalid Gearman server address {original!r}: expected ':port' after ']'; use '[::1]:4730'"
            )
        return host, rest[1:]
    if value.count(":") > 1:
        raise InvalidServerAddress(
            f"invalid Gearman server address {original!r}: put an IPv6 host in brackets, e.g. '[::1]:4730'"
        )
    if ":" in value:
        host, port_text = value.split(":")
        return host, port_text
    return value, None


def parse_servers(values) -> list[ServerAddress]:
    """Parse a list of server strings, raising InvalidServerAddress on the first bad one."""
    if isinstance(values, str):
        raise InvalidServerAddress(
            f"invalid Gearman server list {values!r}: expected a list of strings such as ['127.0.0.1:4730']"
        )
    addresses = [ServerAddress.parse(value) for value in values]
    if not addresses:
        raise InvalidServerAddress("the Gearman server list is empty: name at least one server, e.g. ['127.0.0.1:4730']")
    return addresses
