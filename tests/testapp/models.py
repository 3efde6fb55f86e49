from django.db import models


class JobRecord(models.Model):
    """One job that a test worker ran, written by the worker process so tests can check it."""

    task = models.CharField(max_length=200)
    payload = models.TextField(blank=True)
    pid = models.IntegerField(help_text="Process id of the worker that ran the job.")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.task} (pid {self.pid})"
