"""Settings of the example project.

GEARMAN_SERVERS comes from the environment variable of the same name, a comma-separated list
of "host:port" addresses (default "127.0.0.1:4730"). EXAMPLE_DB_PATH moves the SQLite file
(default example/example.sqlite3).
"""

import os
from pathlib import Path

EXAMPLE_DIR = Path(__file__).resolve().parent.parent

# For the example only: a real project keeps its secret key out of the source code.
SECRET_KEY = "example-project-not-a-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "gearman_pool",
    "invoices",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DB_PATH", EXAMPLE_DIR / "example.sqlite3"),
        # Seconds to wait for a lock, because several worker processes write at once.
        "OPTIONS": {"timeout": 20},
    }
}

GEARMAN_SERVERS = [
    address.strip()
    for address in os.environ.get("GEARMAN_SERVERS", "127.0.0.1:4730").split(",")
    if address.strip()
]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["stderr"], "level": "INFO"},
}
