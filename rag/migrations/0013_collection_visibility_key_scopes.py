"""Collections are public or restricted to groups; API keys carry scopes.

Every existing collection stays public and every existing key keeps what it could do (read and
write everything): nothing changes for callers until staff restrict a collection or narrow a key.
Keys issued from now on read the public collections only, unless given a scope.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('auth', '0012_alter_user_first_name_max_length'),
        ('rag', '0012_feedback'),
    ]

    operations = [
        migrations.AddField(
            model_name='apikey',
            name='all_collections',
            field=models.BooleanField(default=False, help_text="Read (and, with 'may write', write) every collection, restricted ones and those created later."),
        ),
        migrations.AddField(
            model_name='apikey',
            name='can_write',
            field=models.BooleanField(default=False, help_text="Add and delete documents in the collections of its scope (with 'all collections': anywhere, creating collections too).", verbose_name='may write'),
        ),
        migrations.AddField(
            model_name='apikey',
            name='collections',
            field=models.ManyToManyField(blank=True, help_text='The collections it reads besides the public ones, and the only ones it may write to.', related_name='api_keys', to='rag.collection'),
        ),
        migrations.AddField(
            model_name='collection',
            name='groups',
            field=models.ManyToManyField(blank=True, help_text='The groups whose members read it when it is restricted.', related_name='collections', to='auth.group'),
        ),
        migrations.AddField(
            model_name='collection',
            name='visibility',
            field=models.CharField(choices=[('public', 'public: anyone allowed to query the service'), ('restricted', 'restricted: members of its groups (and superusers)')], default='public', help_text='Public: every caller allowed to query the service reads it. Restricted: only members of the groups below, superusers, and API keys whose scope names it.', max_length=16),
        ),
        migrations.RunSQL(
            "UPDATE rag_apikey SET all_collections = true, can_write = true",
            migrations.RunSQL.noop,
        ),
    ]
