from django.db import models


class Image(models.Model):
    """One upload, its re-saved bytes in the row (no index on the lookup key, as before)."""

    device_id = models.CharField(max_length=100)
    timestamp = models.DateTimeField()
    content_type = models.CharField(max_length=50)
    data = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.device_id} {self.timestamp.isoformat()}"
