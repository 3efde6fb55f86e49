import os
import signal
import time

from gearman_pool import GearmanWorkerBaseCommand


class Command(GearmanWorkerBaseCommand):
    """Ignores SIGTERM while its job sleeps, to test the pool's graceful timeout."""

    task_name = "stubborn"

    def do_job(self, job_data):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(float(job_data or 60))
        return str(os.getpid())
