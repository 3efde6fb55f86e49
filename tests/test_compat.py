"""Tests for the 0.x import path and app name, django_gearman_commands."""

import subprocess
import sys

import pytest
from django.test import override_settings

import django_gearman_commands
import gearman_pool
from gearman_pool.server_info import GearmanServerInfo
from tests.conftest import REPO_ROOT, manage_env

COMPAT_SETTINGS = """\
from tests.settings import *  # noqa: F403

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django_gearman_commands",
    "tests.testapp",
]
"""


def test_base_command_is_same_class():
    assert django_gearman_commands.GearmanWorkerBaseCommand is gearman_pool.GearmanWorkerBaseCommand


def test_submit_job_is_same_function():
    assert django_gearman_commands.submit_job is gearman_pool.submit_job


def test_server_info_is_exported():
    assert django_gearman_commands.GearmanServerInfo is GearmanServerInfo


def test_get_namespace_reads_setting():
    assert django_gearman_commands.get_namespace() is None

    with override_settings(GEARMAN_CLIENT_NAMESPACE="staging"):
        assert django_gearman_commands.get_namespace() == "staging"


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError, match="no_such_name"):
        django_gearman_commands.no_such_name


@pytest.fixture
def run_compat(tmp_path, gearmand_address):
    """Run `python -m django` with INSTALLED_APPS naming django_gearman_commands."""
    (tmp_path / "compat_settings.py").write_text(COMPAT_SETTINGS)

    def run(*args, server=gearmand_address):
        env = manage_env(server, {"DJANGO_SETTINGS_MODULE": "compat_settings"})
        env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
        return subprocess.run(
            [sys.executable, "-m", "django", *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def test_compat_app_help_submit_job(run_compat):
    completed = run_compat("help", "gearman_submit_job")

    assert completed.returncode == 0, completed.stderr
    assert "usage:" in completed.stdout
    assert "--foreground" in completed.stdout


def test_compat_app_lists_commands(run_compat):
    completed = run_compat("help")

    assert completed.returncode == 0, completed.stderr
    section = completed.stdout.split("[django_gearman_commands]", 1)
    assert len(section) == 2, completed.stdout
    app_commands = section[1].split("\n[", 1)[0].split()
    assert "gearman_submit_job" in app_commands
    assert "gearman_pool" in app_commands
    assert "gearman_server_info" in app_commands
    assert "[gearman_pool]" not in completed.stdout


def test_compat_app_uses_its_config(run_compat):
    completed = run_compat(
        "shell",
        "--command",
        "from django.apps import apps; print(type(apps.get_app_config('django_gearman_commands')).__name__)",
    )

    assert completed.returncode == 0, completed.stderr
    # Django 5.2 and later print a line about automatic imports first.
    assert completed.stdout.splitlines()[-1] == "DjangoGearmanCommandsConfig"


def test_compat_app_check_passes(run_compat):
    completed = run_compat("check")

    assert completed.returncode == 0, completed.stderr
    assert "no issues" in completed.stdout


def test_compat_app_registers_checks(run_compat):
    completed = run_compat("check", server="127.0.0.1:port")

    assert completed.returncode != 0
    assert "gearman_pool.E002" in completed.stderr
    assert "'127.0.0.1:port'" in completed.stderr


def test_compat_app_legacy_worker_help(run_compat):
    completed = run_compat("gearman_worker_legacy", "--help")

    assert completed.returncode == 0, completed.stderr
    assert "--exit-after-job" in completed.stdout
