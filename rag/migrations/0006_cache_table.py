"""The throttles' database cache table, created by ``migrate`` itself.

A database prepared by ``migrate`` alone (a Kubernetes init job, a managed Postgres) had no cache
table, and every throttled request failed.
"""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("rag", "0005_move_caches")]

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
