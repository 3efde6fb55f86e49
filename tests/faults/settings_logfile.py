"""tests.faults.settings with the gearman_pool logger writing to a file.

FAULTS_LOG_FILE is the file's path. FAULTS_LOG_DELAY=1 makes the handler open the file on
the first record instead of at start (logging.FileHandler's delay option).
"""

import copy
import os

from tests.faults.settings import *  # noqa: F403
from tests.faults.settings import LOGGING

LOGGING = copy.deepcopy(LOGGING)
LOGGING["handlers"]["file"] = {
    "class": "logging.FileHandler",
    "filename": os.environ["FAULTS_LOG_FILE"],
    "delay": os.environ.get("FAULTS_LOG_DELAY") == "1",
    "formatter": "plain",
}
LOGGING["loggers"]["gearman_pool"]["handlers"] = ["file"]
