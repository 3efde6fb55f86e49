import json

from django.db import transaction

from gearman_pool import GearmanWorkerBaseCommand
from invoices.models import ImportedRow


class Command(GearmanWorkerBaseCommand):
    """Imports rows: the job data is a JSON object, or a JSON list of objects."""

    task_name = "data_import"

    def do_job(self, job_data):
        if job_data is None:
            return {"imported": 0}
        rows = json.loads(job_data)
        if not isinstance(rows, list):
            rows = [rows]
        with transaction.atomic():
            ImportedRow.objects.bulk_create(ImportedRow(payload=row) for row in rows)
        return {"imported": len(rows)}
