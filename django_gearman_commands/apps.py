from gearman_pool.apps import GearmanPoolConfig


class DjangoGearmanCommandsConfig(GearmanPoolConfig):
    """The 0.x app label, for projects whose INSTALLED_APPS still names django_gearman_commands."""

    # GearmanPoolConfig, imported above, is a second AppConfig subclass in this module, so
    # Django picks this class for 'django_gearman_commands' only when it is marked default.
    default = True
    name = "django_gearman_commands"
    label = "django_gearman_commands"
    verbose_name = "Gearman commands (0.x name)"
