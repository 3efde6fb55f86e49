from gearman_pool.management.commands.gearman_pool_status import Command

__all__ = ["Command"]
