"""tests.faults.settings with the gearman_pool logger at DEBUG level."""

import copy

from tests.faults.settings import *  # noqa: F403
from tests.faults.settings import LOGGING

LOGGING = copy.deepcopy(LOGGING)
LOGGING["loggers"]["gearman_pool"]["level"] = "DEBUG"
