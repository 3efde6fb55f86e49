import os
import time

from gearman_pool import GearmanWorkerBaseCommand


class Command(GearmanWorkerBaseCommand):
    """Sleeps for the number of seconds in the job data, then returns its pid."""

    task_name = "sleep"

    def do_job(self, job_data):
        time.sleep(float(job_data or 0))
        return str(os.getpid())
