from django.utils import timezone

from gearman_pool import GearmanWorkerBaseCommand
from invoices.models import Invoice


class Command(GearmanWorkerBaseCommand):
    """Sends invoices: the one whose number is the job data, or every unsent one."""

    task_name = "send_invoices"

    def do_job(self, job_data):
        invoices = Invoice.objects.filter(sent_at__isnull=True)
        if job_data:
            invoices = invoices.filter(number=job_data)
        # A real worker would e-mail each invoice here before marking it sent.
        sent = invoices.update(sent_at=timezone.now())
        return f"sent {sent} invoice(s)"
