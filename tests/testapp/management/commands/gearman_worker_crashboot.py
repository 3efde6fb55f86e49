from gearman_pool import GearmanWorkerBaseCommand


class Command(GearmanWorkerBaseCommand):
    """Fails in prepare_worker(), so every pool child dies at start."""

    task_name = "crashboot"

    def prepare_worker(self):
        raise RuntimeError("cannot start: the test asked for it")

    def do_job(self, job_data):
        return job_data
