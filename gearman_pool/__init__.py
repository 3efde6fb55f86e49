"""Gearman workers as Django management commands, run alone or as a supervised prefork pool."""

__version__ = "1.0.0.dev0"

__all__ = ["GearmanWorkerBaseCommand", "submit_job", "submit_job_on_commit"]


def __getattr__(name):
    # Imported on first use, so that loading the app (and its AppConfig) stays light.
    if name == "GearmanWorkerBaseCommand":
        from gearman_pool.worker_command import GearmanWorkerBaseCommand

        return GearmanWorkerBaseCommand
    if name in ("submit_job", "submit_job_on_commit"):
        from gearman_pool import submit

        return getattr(submit, name)
    raise AttributeError(f"module 'gearman_pool' has no attribute {name!r}")
