"""Search at scale (issue 15): the default ordering's index on images and, on PostgreSQL, extended statistics on
the claims searches combine (OS, arch, kind, status), so that the planner estimates combined filters (and the
estimated counts it reports) well. (The trigram index for ``q``, mp_latest_search_trgm, came with 0001.)

The PostgreSQL-only steps do nothing on other databases (SQLite runs the embedded default and the tests)."""

from django.db import migrations, models


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
        PostgresOnly(
            "CREATE STATISTICS mp_entry_claims (ndistinct, dependencies, mcv) "
            "ON (lower(os)), (lower(arch)), kind, is_latest, deprecated FROM marketplace_entry",
            "DROP STATISTICS IF EXISTS mp_entry_claims",
        ),
        PostgresOnly("ANALYZE marketplace_entry", migrations.RunSQL.noop),
    ]
