from gearman_pool.management.commands.gearman_pool_scale import Command

__all__ = ["Command"]
