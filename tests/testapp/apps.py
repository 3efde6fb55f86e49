from django.apps import AppConfig


class TestAppConfig(AppConfig):
    """Test-only app that contains the worker commands and models used by the tests."""

    name = "tests.testapp"
    label = "testapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from tests import project_warnings

        project_warnings.install()
