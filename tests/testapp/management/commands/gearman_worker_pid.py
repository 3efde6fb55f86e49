import os

from gearman_pool import GearmanWorkerBaseCommand


class Command(GearmanWorkerBaseCommand):
    """Returns the pid of the process that ran the job."""

    task_name = "pid"

    def do_job(self, job_data):
        return str(os.getpid())
