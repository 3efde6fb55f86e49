from django.apps import AppConfig
from django.core import checks


class GearmanPoolConfig(AppConfig):
    name = "gearman_pool"
    label = "gearman_pool"
    verbose_name = "Gearman pool"

    def ready(self):
        from gearman_pool.checks import check_settings

        checks.register(check_settings)
