"""System checks for the GEARMAN_* settings; ids are stable, gearman_pool.E001 and up."""

from __future__ import annotations

import numbers

from django.conf import settings
from django.core.checks import Error, Warning

from gearman_pool.address import ServerAddress
from gearman_pool.errors import InvalidServerAddress


def check_settings(app_configs=None, **kwargs):
    errors = []
    errors.extend(_check_servers())
    errors.extend(_check_namespace())
    errors.extend(_check_connect_timeout())
    errors.extend(_check_pool_workers())
    errors.extend(_check_pool_limits())
    errors.extend(_check_persistent_connections())
    return errors


def _check_servers():
    servers = getattr(settings, "GEARMAN_SERVERS", None)
    if servers is None:
        return []
    if not isinstance(servers, (list, tuple)) or not servers:
        return [
            Error(
                f"GEARMAN_SERVERS must be a non-empty list of 'host:port' strings, got {servers!r}.",
                hint="For example: GEARMAN_SERVERS = ['127.0.0.1:4730']",
                id="gearman_pool.E001",
            )
        ]
    errors = []
    for value in servers:
        try:
            ServerAddress.parse(value)
        except InvalidServerAddress as exc:
            errors.append(
                Error(
                    f"GEARMAN_SERVERS contains an invalid address {value!r}: {exc}.",
                    hint="Use 'host', 'host:port' or '[ipv6]:port'; the default port is 4730.",
                    id="gearman_pool.E002",
                )
            )
    return errors


def _check_namespace():
    namespace = getattr(settings, "GEARMAN_CLIENT_NAMESPACE", None)
    if namespace is None or namespace == "":
        return []
    if not isinstance(namespace, str) or any(char.isspace() or char == "\x00" for char in namespace):
        return [
            Error(
                f"GEARMAN_CLIENT_NAMESPACE must be a string without white space or NUL, got {namespace!r}.",
                hint="For example: GEARMAN_CLIENT_NAMESPACE = 'staging'",
                id="gearman_pool.E003",
            )
        ]
    return []


def _check_connect_timeout():
    timeout = getattr(settings, "GEARMAN_CONNECT_TIMEOUT", None)
    if timeout is None:
        return []
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not 0 < timeout <= 3600:
        return [
            Error(
                f"GEARMAN_CONNECT_TIMEOUT must be a positive number of seconds, at most 3600, got {timeout!r}.",
                id="gearman_pool.E004",
            )
        ]
    return []


def _check_pool_workers():
    workers = getattr(settings, "GEARMAN_POOL_WORKERS", None)
    if workers is None:
        return []
    if not isinstance(workers, dict):
        return [
            Error(
                f"GEARMAN_POOL_WORKERS must be a dict of {{name: child count}}, got {workers!r}.",
                hint="For example: GEARMAN_POOL_WORKERS = {'data_import': 4, 'send_invoices': 2}",
                id="gearman_pool.E005",
            )
        ]
    errors = []
    for name, count in workers.items():
        if not isinstance(name, str) or not name or isinstance(count, bool) or not isinstance(count, int) or count < 1:
            errors.append(
                Error(
                    f"GEARMAN_POOL_WORKERS entry {name!r}: {count!r} is invalid; "
                    "the name must be a task or worker command name and the count an integer of at least 1.",
                    id="gearman_pool.E005",
                )
            )
    return errors


def _check_persistent_connections():
    warnings = []
    for alias, database in getattr(settings, "DATABASES", {}).items():
        max_age = database.get("CONN_MAX_AGE", 0)
        if max_age != 0 and not database.get("CONN_HEALTH_CHECKS", False):
            warnings.append(
                Warning(
                    f"DATABASES[{alias!r}] keeps connections open (CONN_MAX_AGE={max_age!r}) without "
                    "CONN_HEALTH_CHECKS, so a Gearman worker's first job after the database dropped "
                    "an idle connection fails.",
                    hint=f"Set DATABASES[{alias!r}]['CONN_HEALTH_CHECKS'] = True.",
                    id="gearman_pool.W001",
                )
            )
    return warnings


def _check_pool_limits():
    from gearman_pool.pool.limits import InvalidLimit, parse_limits

    limits = getattr(settings, "GEARMAN_POOL_LIMITS", None)
    if limits is None:
        return []
    if not isinstance(limits, dict):
        return [
            Error(
                f"GEARMAN_POOL_LIMITS must be a dict of {{task name: {{limit: value}}}}, got {limits!r}.",
                hint="For example: GEARMAN_POOL_LIMITS = {'data_import': {'max_jobs': 500, 'max_memory': '512M'}}",
                id="gearman_pool.E006",
            )
        ]
    errors = []
    for task, values in limits.items():
        try:
            parse_limits(values, f"GEARMAN_POOL_LIMITS[{task!r}]")
        except InvalidLimit as exc:
            errors.append(Error(f"{exc}.", id="gearman_pool.E006"))
    return errors
