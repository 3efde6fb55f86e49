import os

from gearman_pool import GearmanWorkerBaseCommand

# Memory this process keeps across jobs, as a leaking worker would.
HELD = []


class Command(GearmanWorkerBaseCommand):
    """Keeps the number of MiB in the job data allocated, and returns its pid."""

    task_name = "hog"

    def do_job(self, job_data):
        HELD.append(bytearray(int(job_data or 0) * 1024 * 1024))
        return str(os.getpid())
