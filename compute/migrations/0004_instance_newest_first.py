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
    ]
