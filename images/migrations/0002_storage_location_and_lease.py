"""Where an image's bytes are, and the optimizer's lease on it (API.md §10).

On SQLite the blob must stay the row's last column: a column stored after it
is reached only by walking the blob's overflow pages, which would make every
metadata read (listings, revalidations) read the image too. So the state
moves ``data`` after the new columns, and the ``data`` alteration that
follows makes SQLite rebuild the table in that order (a copy of the table,
once). PostgreSQL keeps large values out of line anyway and only gets the
new columns.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("images", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="image",
            name="lease_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="image",
            name="attempts",
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="image",
            name="location",
            field=models.CharField(blank=True, default="", max_length=1100),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(model_name="image", name="data"),
                migrations.AddField(model_name="image", name="data", field=models.BinaryField()),
            ]
        ),
        migrations.AlterField(
            model_name="image",
            name="data",
            field=models.BinaryField(default=b""),
        ),
    ]
