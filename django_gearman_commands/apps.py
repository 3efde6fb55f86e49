from gearman_pool.apps import GearmanPoolConfig


class DjangoGearmanCommandsConfig(GearmanPoolConfig):
    """The 0.x app label, for projects whose INSTALLED_APPS still names django_gearman_commands."""

    name = "django_gearman_commands"
    label = "django_gearman_commands"
    verbose_name = "Gearman commands (0.x name)"
