"""Settings of the pools that the fault-injection tests start.

They extend tests.settings with the app of gearman_worker_fault_record and a PostgreSQL
database, gearman_pool_faults on 127.0.0.1:5432 (user postgres), which
tests/faults/conftest.py creates. Connections persist (CONN_MAX_AGE None) and are checked
before each job (CONN_HEALTH_CHECKS), so a child survives a database restart.

FAULTS_APPLICATION_NAME sets the application_name of the sessions, so a test can find a
pool's sessions in pg_stat_activity.
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.faults.faultapp"]

FAULTS_DATABASE = "gearman_pool_faults"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "USER": "postgres",
        "PASSWORD": "",
        "NAME": FAULTS_DATABASE,
        "CONN_MAX_AGE": None,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {
            "application_name": os.environ.get("FAULTS_APPLICATION_NAME", "gearman_pool_faults"),
            "connect_timeout": 5,
        },
    }
}
