from django.apps import AppConfig


class InvoicesConfig(AppConfig):
    """Example app with the Gearman workers that import rows and send invoices."""

    name = "invoices"
    default_auto_field = "django.db.models.BigAutoField"
