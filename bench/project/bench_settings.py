"""Django settings of the benchmark project: gearman_pool and one app of no-op workers.

BENCH_GEARMAN_SERVER is the "127.0.0.1:PORT" of the gearmand that bench/run.py started;
without it, GEARMAN_SERVERS names 127.0.0.1:1, where nothing listens. BENCH_DB_PATH is the
SQLite file (the workers never query it). BENCH_EXTRA_APPS lists comma-separated apps to
add, such as the app that the reload benchmark writes to a temporary directory.
"""

import os
import tempfile

SECRET_KEY = "gearman-pool-bench-not-a-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "gearman_pool",
    "benchapp",
]
INSTALLED_APPS += [app for app in os.environ.get("BENCH_EXTRA_APPS", "").split(",") if app]

GEARMAN_SERVERS = [os.environ.get("BENCH_GEARMAN_SERVER", "127.0.0.1:1")]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(
            "BENCH_DB_PATH", os.path.join(tempfile.gettempdir(), "gearman_pool_bench.sqlite3")
        ),
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "loggers": {
        "gearman_pool": {"handlers": ["stderr"], "level": "INFO"},
    },
}
