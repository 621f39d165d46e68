"""Search at scale (issue 15): the default ordering's index on images; filter indexes that PostgreSQL can answer
from alone (they carry the raw columns of their expressions) and one keyed by image carrying every filtered claim,
for searches that walk images in page order; on PostgreSQL, extended statistics on the claims searches combine (OS, arch, kind, status), so that the planner estimates combined filters (and the
estimated counts it reports) well. (The trigram index for ``q``, mp_latest_search_trgm, came with 0001.)

The PostgreSQL-only steps do nothing on other databases (SQLite runs the embedded default and the tests)."""

from django.db import migrations, models
from django.db.models.functions import Lower

STATUS_COLUMNS = ("deprecated", "valid_until", "key", "has_location")
CLAIM_COLUMNS = ("os", "os_version", "arch", "kind")


class PostgresOnly(migrations.RunSQL):
    """Raw SQL that only PostgreSQL runs; other databases skip it both ways."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0004_image_facts")]

    operations = [
        migrations.AddIndex(
            model_name="image", index=models.Index(fields=["-updated", "-id"], name="mp_image_updated")
        ),
        # The filter indexes carry the raw columns of their expressions, for index-only scans.
        migrations.RemoveIndex(model_name="entry", name="mp_latest_os"),
        migrations.RemoveIndex(model_name="entry", name="mp_latest_arch_kind"),
        migrations.AddIndex(
            model_name="entry",
            index=models.Index(
                Lower("os"),
                Lower("os_version"),
                condition=models.Q(("is_latest", True)),
                include=("image", *CLAIM_COLUMNS, *STATUS_COLUMNS),
                name="mp_latest_os",
            ),
        ),
        migrations.AddIndex(
            model_name="entry",
            index=models.Index(
                Lower("arch"),
                models.F("kind"),
                condition=models.Q(("is_latest", True)),
                include=("image", *CLAIM_COLUMNS, *STATUS_COLUMNS),
                name="mp_latest_arch_kind",
            ),
        ),
        migrations.AddIndex(
            model_name="entry",
            index=models.Index(
                models.F("image"),
                condition=models.Q(("is_latest", True)),
                include=("endorser", "fingerprint", *CLAIM_COLUMNS, *STATUS_COLUMNS),
                name="mp_latest_image_claims",
            ),
        ),
        PostgresOnly(
            "CREATE STATISTICS mp_entry_claims (ndistinct, dependencies, mcv) "
            "ON (lower(os)), (lower(arch)), kind, is_latest, deprecated FROM marketplace_entry",
            "DROP STATISTICS IF EXISTS mp_entry_claims",
        ),
        PostgresOnly("ANALYZE marketplace_entry", migrations.RunSQL.noop),
    ]
