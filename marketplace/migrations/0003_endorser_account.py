"""An endorser e-mail belongs to one account (or to the site, ``account`` null): DESIGN §2.2.

Existing endorsers get the account whose keys signed all their entries; an endorser whose entries come from
several holders is left without one. Then the rows that break the rule are printed (the same list as the
``marketplace.W001``… database checks); nothing is changed for them."""

from __future__ import annotations

import sys
from typing import Any

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def backfill_accounts(apps: Any, schema_editor: Any) -> None:
    """Give each endorser the one account whose keys signed its entries, when there is exactly one and the
    site key signed none of them; others (the site's, or ambiguous ones) stay without an account."""
    endorsers = apps.get_model("marketplace", "Endorser")
    entries = apps.get_model("marketplace", "Entry")
    for endorser in endorsers.objects.filter(account__isnull=True).order_by("pk"):
        own = entries.objects.filter(endorser=endorser)
        owners = set(own.filter(key__isnull=False).values_list("key__owner_id", flat=True).distinct())
        if len(owners) == 1 and not own.filter(key__isnull=True).exists():
            endorsers.objects.filter(pk=endorser.pk).update(account_id=owners.pop())


def report_rows_breaking_the_rule(apps: Any, schema_editor: Any) -> None:
    """Print the stored rows that break the endorser-identity rule (read-only)."""
    from marketplace.selectors import identity_problems

    problems = identity_problems(apps=apps)
    if not problems:
        return
    out = sys.stdout
    out.write(f"\n  Marketplace: {len(problems)} group(s) of stored rows break the endorser-identity rule ")
    out.write("(see `manage.py check --database default`):\n")
    for problem in problems:
        out.write(f"    [{problem.kind}] {problem.message}\n")


class Migration(migrations.Migration):
    dependencies = [
        ("marketplace", "0002_site_policy"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="endorser",
            name="account",
            field=models.ForeignKey(
                blank=True,
                help_text="The account whose keys endorse as this e-mail; empty: the site.",
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="endorsers",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(backfill_accounts, migrations.RunPython.noop),
        migrations.RunPython(report_rows_breaking_the_rule, migrations.RunPython.noop, elidable=True),
    ]
