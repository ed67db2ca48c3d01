"""An answer is cached for the exact set of collections that built it, and the query log says
which collections each question was asked of.

The cached answers are dropped (a cache: they are rebuilt by the next questions). The query log
keeps its rows; each gets the id of the collection it names, when that collection still exists.
"""

import django.contrib.postgres.fields
import django.contrib.postgres.indexes
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('rag', '0013_collection_visibility_key_scopes'),
    ]

    operations = [
        migrations.RunSQL(
            "DELETE FROM resilience_cachedanswerusage; DELETE FROM resilience_cachedanswer",
            migrations.RunSQL.noop,
        ),
        migrations.RemoveConstraint(
            model_name='cachedanswer',
            name='cachedanswer_unique_question',
        ),
        migrations.RemoveField(
            model_name='cachedanswer',
            name='collection',
        ),
        migrations.RemoveField(
            model_name='cachedanswer',
            name='corpus_version',
        ),
        migrations.AddField(
            model_name='cachedanswer',
            name='collection_ids',
            field=django.contrib.postgres.fields.ArrayField(base_field=models.BigIntegerField(), default=list, size=None),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name='cachedanswer',
            name='corpus_versions',
            field=django.contrib.postgres.fields.ArrayField(base_field=models.BigIntegerField(), default=list, size=None),
            preserve_default=False,
        ),
        migrations.AddConstraint(
            model_name='cachedanswer',
            constraint=models.UniqueConstraint(fields=('collection_ids', 'corpus_versions', 'embedding_model', 'generation', 'prompt_version', 'k', 'question_hash'), name='cachedanswer_unique_question'),
        ),
        migrations.AddIndex(
            model_name='cachedanswer',
            index=django.contrib.postgres.indexes.GinIndex(fields=['collection_ids'], name='cachedanswer_collections_gin'),
        ),
        migrations.RemoveIndex(
            model_name='querylog',
            name='querylog_collection_question',
        ),
        migrations.AlterField(
            model_name='querylog',
            name='collection',
            field=models.TextField(),
        ),
        migrations.AddField(
            model_name='querylog',
            name='collection_ids',
            field=django.contrib.postgres.fields.ArrayField(base_field=models.BigIntegerField(), default=list, size=None),
        ),
        migrations.RunSQL(
            "UPDATE rag_querylog q SET collection_ids = ARRAY[c.id] FROM rag_collection c WHERE c.name = q.collection",
            migrations.RunSQL.noop,
        ),
        migrations.AddIndex(
            model_name='querylog',
            index=models.Index(fields=['question_hash', 'collection_ids'], name='querylog_question_collections'),
        ),
    ]
