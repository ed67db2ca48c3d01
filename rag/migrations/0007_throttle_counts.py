"""The throttles' counts, in an unlogged table: a crash forgets them, and no request waits on the WAL."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('rag', '0006_cache_table'),
    ]

    operations = [
        migrations.CreateModel(
            name='ThrottleCount',
            fields=[
                ('key', models.CharField(max_length=200, primary_key=True, serialize=False)),
                ('window_index', models.BigIntegerField()),
                ('count', models.PositiveIntegerField(default=0)),
                ('previous', models.PositiveIntegerField(default=0)),
                ('expires_at', models.DateTimeField(db_index=True)),
            ],
        ),
        migrations.RunSQL("ALTER TABLE rag_throttlecount SET UNLOGGED", "ALTER TABLE rag_throttlecount SET LOGGED"),
    ]
