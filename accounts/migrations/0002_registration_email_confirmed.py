import django.db.models.functions.text
from django.conf import settings
from django.db import migrations, models


def report_shared_emails(apps, schema_editor):
    """Print the rows that break "an e-mail names one person" (reads only; rows are never changed).
    Pending requests sharing an address would make the new constraint fail: stop with what to do instead."""
    from accounts.selectors import email_conflicts

    conflicts = email_conflicts(
        users=apps.get_model("auth", "User").objects.all(),
        registrations=apps.get_model("accounts", "RegistrationRequest").objects.all(),
    )
    for conflict in conflicts:
        print(f"\n  accounts: {conflict.email} is shared by the {conflict.kind} {', '.join(conflict.names)}")
    pending = [c for c in conflicts if c.kind == "pending registrations"]
    if pending:
        shared = "; ".join(f"{c.email} ({', '.join(c.names)})" for c in pending)
        raise RuntimeError(
            f"Pending registration requests share an e-mail address: {shared}. Reject all but one of each in the "
            "registrations console (or with the previous release's admin API), then run migrate again."
        )


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
