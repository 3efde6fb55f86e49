from gearman_pool import GearmanWorkerBaseCommand


class Command(GearmanWorkerBaseCommand):
    """Returns the job data unchanged; raises when the data is "raise"."""

    task_name = "echo"

    def do_job(self, job_data):
        if job_data == "raise":
            raise ValueError("asked to raise")
        return job_data
