import json
import os

from django.db import connection

from gearman_pool import GearmanWorkerBaseCommand
from tests.testapp.models import JobRecord


class Command(GearmanWorkerBaseCommand):
    """Writes one JobRecord per job through the ORM and returns the row's id and pid."""

    task_name = "record"

    def do_job(self, job_data):
        record = JobRecord.objects.create(task=self.task_name, payload=job_data or "", pid=os.getpid())
        return {"id": record.id, "pid": os.getpid(), "vendor": connection.vendor}
