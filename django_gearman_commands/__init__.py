"""The 0.x import path, kept so that existing worker commands run unchanged.

``import django_gearman_commands`` and ``'django_gearman_commands'`` in INSTALLED_APPS keep
working; new code imports ``gearman_pool``.
"""

__all__ = ["GearmanServerInfo", "GearmanWorkerBaseCommand", "get_namespace", "submit_job"]


def __getattr__(name):
    if name == "GearmanWorkerBaseCommand":
        from gearman_pool.worker_command import GearmanWorkerBaseCommand

        return GearmanWorkerBaseCommand
    if name == "GearmanServerInfo":
        from gearman_pool.server_info import GearmanServerInfo

        return GearmanServerInfo
    if name == "submit_job":
        from gearman_pool.submit import submit_job

        return submit_job
    if name == "get_namespace":
        from gearman_pool.conf import gearman_settings

        return lambda: gearman_settings.namespace
    raise AttributeError(f"module 'django_gearman_commands' has no attribute {name!r}")
