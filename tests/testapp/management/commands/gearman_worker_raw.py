import hashlib

from gearman_pool import GearmanWorkerBaseCommand


class Command(GearmanWorkerBaseCommand):
    """Receives raw bytes and returns them unchanged, or their SHA-256 for "sha256:" data."""

    task_name = "raw"
    job_data_encoding = None

    def do_job(self, job_data):
        if job_data is None:
            return b"<empty>"
        if job_data.startswith(b"sha256:"):
            return hashlib.sha256(job_data[7:]).hexdigest()
        return job_data
