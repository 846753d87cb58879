"""A fresh database filled fast for ``python -m bench.lifecycle``, in a setup subprocess.

A handful of noise PNGs go through ``image_ingest``, then their rows are
copied with new ids, keys and times (``populate``, run by ``fill`` as
``python -m bench.lifecycle --populate SPEC`` with Django set up on the URL).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from bench.support import ROOT, noise_png

PRUNE_DAYS = 60  # prune's rows are received over this span; the templates before it


def populate(spec: dict) -> None:
    """``spec["count"]`` images cycling through ingested noise PNGs of ``spec["sides"]``."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from images.models import Image
    from images.services import image_ingest

    call_command("migrate", interactive=False, verbosity=0)
    now = datetime.now(UTC)
    templates = []
    for n, side in enumerate(spec["sides"]):
        stamp = now - timedelta(days=PRUNE_DAYS + 1, seconds=n)
        made = image_ingest(
            device_id="template", timestamp=stamp, data=noise_png(side, n, mode="L")
        )
        image = Image.objects.get(id=made.image.id)
        # Every column, so that rows stay whole whatever the model grows.
        fields = {f.attname: getattr(image, f.attname) for f in Image._meta.concrete_fields}
        templates.append({**fields, "data": bytes(fields["data"])})
    Image.objects.filter(device_id="template").delete()
    count, devices, days = spec["count"], spec["devices"], spec["days"]
    span = timedelta(days=days) if days else timedelta(seconds=count)
    batch: list[Image] = []
    for i in range(count):
        received = now - span * (count - i) / count
        device = spec["device"] if devices == 1 else f"dev-{i % devices:03d}"
        row = {**templates[i % len(templates)], "id": uuid.uuid4(), "device_id": device}
        row.update(timestamp=received - timedelta(seconds=1), received_at=received)
        row.update(modified_at=received, optimized=True, lease_until=None, attempts=0)
        batch.append(Image(**row))
        if len(batch) == 2000 or i == count - 1:
            Image.objects.bulk_create(batch, batch_size=500)
            batch = []
    if connection.vendor == "postgresql":
        # A table filled over 60 days would have been analysed by now.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE images_image")


def fill(url: str, **spec: object) -> float:
    """Run :func:`populate` on ``url`` in a subprocess; its seconds."""
    start = time.monotonic()
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "x"}
    command = [sys.executable, "-m", "bench.lifecycle", "--populate", json.dumps(spec)]
    subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=1800)
    # Written out now, so that what follows is not measured against its write-back.
    os.sync()
    return time.monotonic() - start
