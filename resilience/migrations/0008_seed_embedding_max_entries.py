"""Seed the embedding cache's size from the environment, as 0002 seeds the other fields.

0002 created the cache row before 0007 added ``embedding_max_entries``, so on a fresh database the
column kept its default whatever RAGSITE_CACHE_EMBEDDING_MAX_ENTRIES said. When the variable is set,
a row still at the default takes its value; a value chosen in the admin is left alone.
"""

import os

from django.db import migrations


def seed_embedding_max_entries(apps, schema_editor):
    from resilience.config import CacheConfig, section_from_env

    if not os.environ.get("RAGSITE_CACHE_EMBEDDING_MAX_ENTRIES", "").strip():
        return
    value = section_from_env(CacheConfig).embedding_max_entries
    model = apps.get_model("resilience", "CacheSettings")
    model.objects.filter(pk=1, embedding_max_entries=CacheConfig.embedding_max_entries).update(
        embedding_max_entries=value
    )


class Migration(migrations.Migration):
    dependencies = [
        ("resilience", "0007_cache_embedding_max_entries"),
    ]

    operations = [
        migrations.RunPython(seed_embedding_max_entries, migrations.RunPython.noop),
    ]
