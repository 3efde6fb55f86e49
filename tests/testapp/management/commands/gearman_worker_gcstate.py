import gc
import json

from gearman_pool import GearmanWorkerBaseCommand


class Command(GearmanWorkerBaseCommand):
    """Returns the number of objects that the garbage collector treats as frozen."""

    task_name = "gcstate"

    def do_job(self, job_data):
        return json.dumps({"frozen": gc.get_freeze_count()})
