"""Composite foreign keys that Django cannot express: a comparison's completions belong to
its prompt, and its prompt is its ranking's prompt. PostgreSQL only; SQLite (the embedded
development default) relies on the service's checks."""

from django.db import migrations

FOREIGN_KEYS = [
    ("comparison_winner_of_prompt", "winner_id, prompt_id", "annotation_completion (id, prompt_id)"),
    ("comparison_loser_of_prompt", "loser_id, prompt_id", "annotation_completion (id, prompt_id)"),
    ("comparison_prompt_of_ranking", "ranking_id, prompt_id", "annotation_ranking (id, prompt_id)"),
]


def add_foreign_keys(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, columns, target in FOREIGN_KEYS:
        schema_editor.execute(
            f"ALTER TABLE annotation_comparison ADD CONSTRAINT {name} "
            f"FOREIGN KEY ({columns}) REFERENCES {target} ON DELETE CASCADE"
        )


def drop_foreign_keys(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _, _ in FOREIGN_KEYS:
        schema_editor.execute(f"ALTER TABLE annotation_comparison DROP CONSTRAINT {name}")


class Migration(migrations.Migration):
    dependencies = [("annotation", "0001_initial")]

    operations = [migrations.RunPython(add_foreign_keys, drop_foreign_keys)]
