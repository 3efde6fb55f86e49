from gearman_pool.management.commands.gearman_server_info import Command

__all__ = ["Command"]
