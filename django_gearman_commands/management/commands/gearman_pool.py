from gearman_pool.management.commands.gearman_pool import Command

__all__ = ["Command"]
