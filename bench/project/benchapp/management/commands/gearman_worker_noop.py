from gearman_pool import GearmanWorkerBaseCommand


class Command(GearmanWorkerBaseCommand):
    """Does nothing and returns an empty result, so that a benchmark times the job path only."""

    task_name = "noop"

    def do_job(self, job_data):
        return None
