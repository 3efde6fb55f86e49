from django.db import models


class ImportedRow(models.Model):
    """One row of imported data, written by the data import worker."""

    payload = models.JSONField()
    imported_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"row {self.pk} imported at {self.imported_at:%Y-%m-%d %H:%M:%S}"


class Invoice(models.Model):
    """An invoice. sent_at stays empty until the send worker has sent it."""

    number = models.CharField(max_length=50, unique=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["number"]

    def __str__(self) -> str:
        return self.number
