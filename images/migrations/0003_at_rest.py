"""What is held at rest for each image (API.md §12): its size and its form.

Existing images hold their served bytes, so their size at rest is their
stored size. As in 0002, ``data`` is moved back to the end of the row on
SQLite (see there why).
"""

from django.db import migrations, models


def at_rest_is_stored(apps, schema_editor):  # noqa: ANN001, ARG001 - Django's signature
    Image = apps.get_model("images", "Image")
    Image.objects.update(at_rest_size=models.F("stored_size"))


class Migration(migrations.Migration):
    dependencies = [
        ("images", "0002_storage_location_and_lease"),
    ]

    operations = [
        migrations.AddField(
            model_name="image",
            name="at_rest_size",
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="image",
            name="at_rest_form",
            field=models.CharField(blank=True, default="", max_length=16),
        ),
        migrations.RunPython(at_rest_is_stored, migrations.RunPython.noop),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(model_name="image", name="location"),
                migrations.RemoveField(model_name="image", name="data"),
                migrations.AddField(
                    model_name="image",
                    name="location",
                    field=models.CharField(blank=True, default="", max_length=1100),
                ),
                migrations.AddField(model_name="image", name="data", field=models.BinaryField()),
            ]
        ),
        migrations.AlterField(
            model_name="image",
            name="data",
            field=models.BinaryField(default=b""),
        ),
    ]
