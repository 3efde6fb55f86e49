from gearman_pool.management.commands.gearman_submit_job import Command

__all__ = ["Command"]
