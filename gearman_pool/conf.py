"""Settings of gearman_pool, read from django.conf.settings on every access.

Nothing is cached, so ``override_settings`` in tests and settings changed before a pool
reload take effect. Validation with readable messages lives in ``checks.py``; the
properties here raise InvalidServerAddress on a malformed value.
"""

from __future__ import annotations

import os
import re
import tempfile

from django.conf import settings

from gearman_pool.address import ServerAddress, parse_servers

DEFAULT_SERVERS = ("127.0.0.1:4730",)
DEFAULT_CONNECT_TIMEOUT = 5.0


class GearmanSettings:
    @property
    def servers(self) -> list[ServerAddress]:
        """GEARMAN_SERVERS: "host:port" strings of the job servers to use."""
        return parse_servers(getattr(settings, "GEARMAN_SERVERS", DEFAULT_SERVERS))

    @property
    def namespace(self) -> str | None:
        """GEARMAN_CLIENT_NAMESPACE: suffix appended to every task name as "task@namespace"."""
        return getattr(settings, "GEARMAN_CLIENT_NAMESPACE", None) or None

    @property
    def connect_timeout(self) -> float:
        """GEARMAN_CONNECT_TIMEOUT: seconds to wait for a TCP connection to a job server."""
        return float(getattr(settings, "GEARMAN_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT))

    @property
    def pool_workers(self) -> dict[str, int]:
        """GEARMAN_POOL_WORKERS: {task or command name: child count} for gearman_pool."""
        return dict(getattr(settings, "GEARMAN_POOL_WORKERS", {}) or {})

    @property
    def pool_limits(self) -> dict:
        """GEARMAN_POOL_LIMITS: {task name: {"max_jobs", "max_memory", "job_timeout"}}."""
        return dict(getattr(settings, "GEARMAN_POOL_LIMITS", {}) or {})

    @property
    def control_socket(self) -> str:
        """GEARMAN_POOL_CONTROL_SOCKET: path of the pool master's control socket.

        The default is unique per user and settings module, in the system temp
        directory, so `gearman_pool_status` finds the pool of the same project.
        """
        path = getattr(settings, "GEARMAN_POOL_CONTROL_SOCKET", None)
        if path:
            return str(path)
        module = re.sub(r"[^A-Za-z0-9_.-]", "_", getattr(settings, "SETTINGS_MODULE", None) or "settings")
        return os.path.join(tempfile.gettempdir(), f"gearman_pool-{os.getuid()}-{module}.sock")

    def namespaced(self, task_name: str) -> str:
        """Return the task name as registered at gearmand, with the namespace applied."""
        namespace = self.namespace
        return f"{task_name}@{namespace}" if namespace else task_name


gearman_settings = GearmanSettings()
