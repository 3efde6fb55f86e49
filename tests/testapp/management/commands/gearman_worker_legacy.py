import django_gearman_commands


class Command(django_gearman_commands.GearmanWorkerBaseCommand):
    """A worker written for 0.x: task_name as a property, imported from the old path."""

    @property
    def task_name(self):
        return "legacy"

    def do_job(self, job_data):
        return f"legacy got {job_data}"
