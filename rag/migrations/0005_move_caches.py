"""The answer and embedding caches move from the resilience app to rag, keeping their tables.

Only Django's record of the models moves (their tables keep the names they were created with);
the content types move too, so permissions already granted on them still hold.
"""

import django.contrib.postgres.indexes
import django.db.models.deletion
import django.db.models.functions.comparison
import pgvector.django.indexes
import pgvector.django.vector
from django.db import migrations, models


MOVED = ["cachedanswer", "cachedanswerusage", "cachedembedding", "cachecounter"]


def move_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label="rag", model__in=MOVED).exists():
        ContentType.objects.filter(app_label="resilience", model__in=MOVED).update(app_label="rag")


def restore_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="rag", model__in=MOVED).update(app_label="resilience")


class Migration(migrations.Migration):

    dependencies = [
        ('rag', '0004_apikey'),
        ('resilience', '0004_access_settings'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
            migrations.CreateModel(
                name='CacheCounter',
                fields=[
                    ('name', models.CharField(max_length=64, primary_key=True, serialize=False)),
                    ('value', models.BigIntegerField(default=0)),
                ],
                options={
                    'db_table': 'resilience_cachecounter',
                },
            ),
            migrations.CreateModel(
                name='CachedAnswer',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('corpus_version', models.PositiveBigIntegerField()),
                    ('embedding_model', models.CharField(max_length=200)),
                    ('generation', models.CharField(help_text="'extractive' or 'ollama/<model>'.", max_length=200)),
                    ('prompt_version', models.CharField(max_length=32)),
                    ('k', models.PositiveSmallIntegerField()),
                    ('question_hash', models.CharField(help_text='SHA-256 of the normalised question.', max_length=64)),
                    ('question', models.TextField()),
                    ('embedding', pgvector.django.vector.VectorField()),
                    ('answer', models.TextField()),
                    ('sources', models.JSONField(default=list, help_text='The sources as the API returns them.')),
                    ('generator', models.CharField(max_length=200)),
                    ('created_at', models.DateTimeField()),
                    ('collection', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='rag.collection')),
                ],
                options={
                    'db_table': 'resilience_cachedanswer',
                },
            ),
            migrations.CreateModel(
                name='CachedAnswerUsage',
                fields=[
                    ('entry', models.OneToOneField(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='usage', serialize=False, to='rag.cachedanswer')),
                    ('hits', models.PositiveIntegerField(default=0)),
                    ('last_hit_at', models.DateTimeField()),
                ],
                options={
                    'db_table': 'resilience_cachedanswerusage',
                },
            ),
            migrations.CreateModel(
                name='CachedEmbedding',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('model', models.CharField(max_length=200)),
                    ('text_hash', models.CharField(help_text='SHA-256 of the whitespace-normalised text.', max_length=64)),
                    ('embedding', pgvector.django.vector.VectorField()),
                    ('created_at', models.DateTimeField(auto_now_add=True)),
                ],
                options={
                    'db_table': 'resilience_cachedembedding',
                    'constraints': [models.UniqueConstraint(fields=('model', 'text_hash'), name='cachedembedding_unique_text')],
                },
            ),
            migrations.AddIndex(
                model_name='cachedanswer',
                index=models.Index(fields=['created_at'], name='cachedanswer_created'),
            ),
            migrations.AddIndex(
                model_name='cachedanswer',
                index=pgvector.django.indexes.HnswIndex(django.contrib.postgres.indexes.OpClass(django.db.models.functions.comparison.Cast('embedding', output_field=pgvector.django.vector.VectorField(dimensions=384)), name='vector_cosine_ops'), condition=models.Q(('embedding_model', 'local/all-MiniLM-L6-v2')), ef_construction=128, m=24, name='cachedanswer_minilm_hnsw'),
            ),
            migrations.AddConstraint(
                model_name='cachedanswer',
                constraint=models.UniqueConstraint(fields=('collection', 'corpus_version', 'embedding_model', 'generation', 'prompt_version', 'k', 'question_hash'), name='cachedanswer_unique_question'),
            ),
            ],
        ),
        migrations.AlterField(
            model_name='querylog',
            name='cache',
            field=models.CharField(choices=[('exact', 'exact hit'), ('semantic', 'semantic hit'), ('miss', 'miss'), ('bypass', 'bypass (the cache was not consulted)')], max_length=16),
        ),
        migrations.RunPython(move_content_types, restore_content_types),
    ]
