import django.db.models.functions.text
from django.conf import settings
from django.db import migrations, models


def report_shared_emails(apps, schema_editor):
    """Print the rows that break "an e-mail names one person" (reads only; rows are never changed).
    Pending requests sharing an address make the new constraint fail: reject all but one first."""
    from accounts.selectors import email_conflicts

    conflicts = email_conflicts(
        users=apps.get_model("auth", "User").objects.all(),
        registrations=apps.get_model("accounts", "RegistrationRequest").objects.all(),
    )
    for conflict in conflicts:
        print(f"\n  accounts: {conflict.email} is shared by the {conflict.kind} {', '.join(conflict.names)}")


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="registrationrequest",
            name="email_confirmed",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(report_shared_emails, migrations.RunPython.noop, elidable=True),
        migrations.AddConstraint(
            model_name="registrationrequest",
            constraint=models.UniqueConstraint(
                django.db.models.functions.text.Lower("email"),
                condition=models.Q(("status", "pending")),
                name="one_pending_request_per_email",
            ),
        ),
    ]
