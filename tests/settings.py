"""Django settings for the test suite.

Environment variables:

GEARMAN_TEST_SERVER
    "127.0.0.1:PORT" of the gearmand that runtests.py or tests/conftest.py started. Without it,
    GEARMAN_SERVERS names 127.0.0.1:1, where nothing listens, so code that runs outside the
    test setup never reaches a foreign server (such as a system gearmand on port 4730).
TEST_DB
    Database backend: "sqlite" (default), "postgresql" or "mysql". PostgreSQL is expected on
    127.0.0.1:5432 (user postgres, trust authentication) and MySQL or MariaDB on 127.0.0.1:3306
    (user root, empty password). pytest-django creates and drops the test database
    "test_gearman_pool" there, so the user needs the right to create databases.
TEST_SQLITE_PATH
    SQLite database file. When it is not set, the first process that imports these settings
    picks a file in the system temp directory, named after its pid, and exports the path. The
    management commands that the tests start as child processes then open the same file.
GEARMAN_POOL_TEST_CONTROL_SOCKET
    The pool's control socket; tests/conftest.py gives every pool it starts its own.
TEST_EXTRA_APPS
    Comma-separated app modules appended to INSTALLED_APPS, for apps a test writes to disk.
TEST_DB_USE_TEST_NAME
    "1" makes the default connection use the test database that pytest-django created
    (TEST["NAME"]). The run_manage and spawn_manage fixtures set it for their child processes.

The database tests in tests/test_pool_database.py start pools with these variables, which
change only the "default" connection and are applied after TEST_DB_USE_TEST_NAME:

TEST_DB_NAME
    Database name (NAME) for "postgresql" or "mysql".
TEST_CONN_MAX_AGE
    CONN_MAX_AGE in seconds, or "none" for connections that persist without limit.
TEST_CONN_HEALTH_CHECKS
    "1" sets CONN_HEALTH_CHECKS = True, "0" sets it to False.
TEST_DB_APPLICATION_NAME
    PostgreSQL only: the application_name that the server shows in pg_stat_activity.
TEST_DB_INIT_COMMAND
    MySQL and MariaDB only: the init_command that runs on every new connection.
"""

import os
import tempfile

from django.core.exceptions import ImproperlyConfigured

SECRET_KEY = "gearman-pool-tests-not-a-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "gearman_pool",
    "tests.testapp",
]
# Apps that a test writes to a temporary directory on PYTHONPATH, comma-separated; the
# reload tests edit their worker code on disk.
INSTALLED_APPS += [app for app in os.environ.get("TEST_EXTRA_APPS", "").split(",") if app]

UNREACHABLE_GEARMAN_SERVER = "127.0.0.1:1"
# Set per spawned pool by tests/conftest.py; None selects the default path.
GEARMAN_POOL_CONTROL_SOCKET = os.environ.get("GEARMAN_POOL_TEST_CONTROL_SOCKET")
GEARMAN_SERVERS = [os.environ.get("GEARMAN_TEST_SERVER", UNREACHABLE_GEARMAN_SERVER)]

TEST_DB = os.environ.get("TEST_DB", "sqlite")

if TEST_DB == "sqlite":
    # tests/conftest.py deletes the file at the end of the run only when it was picked here.
    SQLITE_PATH_IS_TEMPORARY = "TEST_SQLITE_PATH" not in os.environ
    SQLITE_PATH = os.environ.setdefault(
        "TEST_SQLITE_PATH",
        os.path.join(tempfile.gettempdir(), f"gearman_pool_tests_{os.getpid()}.sqlite3"),
    )
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": SQLITE_PATH,
            # Seconds to wait while another worker process has the database locked.
            "OPTIONS": {"timeout": 20},
            # A file, not Django's default in-memory test database, because worker processes
            # must see the rows that the test writes, and the reverse.
            "TEST": {"NAME": SQLITE_PATH},
        }
    }
elif TEST_DB == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": "5432",
            "USER": "postgres",
            "PASSWORD": "",
            "NAME": "test",
            "TEST": {"NAME": "test_gearman_pool"},
        }
    }
elif TEST_DB == "mysql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "HOST": "127.0.0.1",
            "PORT": "3306",
            "USER": "root",
            "PASSWORD": "",
            "NAME": "test",
            "OPTIONS": {"charset": "utf8mb4"},
            "TEST": {"NAME": "test_gearman_pool", "CHARSET": "utf8mb4"},
        }
    }
else:
    raise ImproperlyConfigured(
        f"Invalid TEST_DB value {TEST_DB!r}: expected 'sqlite', 'postgresql' or 'mysql'."
    )

if os.environ.get("TEST_DB_USE_TEST_NAME") == "1":
    DATABASES["default"]["NAME"] = DATABASES["default"]["TEST"]["NAME"]

if "TEST_DB_NAME" in os.environ:
    DATABASES["default"]["NAME"] = os.environ["TEST_DB_NAME"]
if "TEST_CONN_MAX_AGE" in os.environ:
    max_age = os.environ["TEST_CONN_MAX_AGE"]
    DATABASES["default"]["CONN_MAX_AGE"] = None if max_age == "none" else int(max_age)
if "TEST_CONN_HEALTH_CHECKS" in os.environ:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = os.environ["TEST_CONN_HEALTH_CHECKS"] == "1"
if "TEST_DB_APPLICATION_NAME" in os.environ:
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options["application_name"] = os.environ["TEST_DB_APPLICATION_NAME"]
if "TEST_DB_INIT_COMMAND" in os.environ:
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options["init_command"] = os.environ["TEST_DB_INIT_COMMAND"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            # sys.__stderr__ rather than sys.stderr: pytest replaces sys.stderr while it captures
            # output and closes the replacement at exit, which would break a handler that kept
            # it. pytest's default capture mode (fd) still captures the output for the report.
            "stream": "ext://sys.__stderr__",
            "formatter": "plain",
        },
    },
    "loggers": {
        "gearman_pool": {"handlers": ["stderr"], "level": "INFO"},
        "django_gearman_commands": {"handlers": ["stderr"], "level": "INFO"},
    },
}
