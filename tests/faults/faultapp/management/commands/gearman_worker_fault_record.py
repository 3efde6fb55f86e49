import os
import signal

from django.db import connection

from gearman_pool import GearmanWorkerBaseCommand

# A job whose data starts with this prefix kills its own child after recording the run.
POISON_PREFIX = "poison-"


class Command(GearmanWorkerBaseCommand):
    """Inserts one row (job data, pid) into fault_jobs per job and returns the pid.

    The row is committed before the result is sent, so a job that gearmand hands out twice
    leaves two rows. A job whose data starts with "poison-" then SIGKILLs its own process.
    """

    task_name = "fault_record"

    def do_job(self, job_data):
        job_id = job_data or ""
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO fault_jobs (job_id, pid) VALUES (%s, %s)", [job_id, os.getpid()]
            )
        if job_id.startswith(POISON_PREFIX):
            os.kill(os.getpid(), signal.SIGKILL)
        return str(os.getpid())
