"""The caches' models now belong to rag (rag 0005): forget them here, keep their tables."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('resilience', '0004_access_settings'),
        ('rag', '0005_move_caches'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(
                    name='CacheCounter',
                ),
                migrations.RemoveField(
                    model_name='cachedanswer',
                    name='collection',
                ),
                migrations.RemoveField(
                    model_name='cachedanswerusage',
                    name='entry',
                ),
                migrations.DeleteModel(
                    name='CachedEmbedding',
                ),
                migrations.DeleteModel(
                    name='CachedAnswer',
                ),
                migrations.DeleteModel(
                    name='CachedAnswerUsage',
                ),
            ],
        ),
    ]
