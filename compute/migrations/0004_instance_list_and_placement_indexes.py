from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("compute", "0003_reconciliation_usage_records"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="instance",
            index=models.Index(fields=["-created", "-id"], name="instance_newest_first"),
        ),
        migrations.AddIndex(
            model_name="instance",
            index=models.Index(
                condition=models.Q(
                    state__in=[
                        "pending",
                        "scheduled",
                        "preparing",
                        "booting",
                        "running",
                        "stopping",
                        "stopped",
                        "terminating",
                        "error",
                    ]
                ),
                fields=["host"],
                include=("vcpus", "ram_mib"),
                name="instance_live_per_host",
            ),
        ),
    ]
