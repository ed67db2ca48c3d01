from django.db import migrations, models


def record_collections(apps, schema_editor):
    """Jobs already queued belong to the collection their name names now."""
    Job = apps.get_model("rag", "Job")
    Collection = apps.get_model("rag", "Collection")
    for pk, name in Collection.objects.values_list("pk", "name"):
        Job.objects.filter(kind="ingest", collection=name, collection_pk__isnull=True).update(collection_pk=pk)


class Migration(migrations.Migration):
    dependencies = [
        ("rag", "0016_collection_name_ends_at_its_last_character"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="collection_pk",
            field=models.BigIntegerField(
                blank=True,
                help_text="The collection's id when the job was queued (None: a new collection).",
                null=True,
            ),
        ),
        migrations.RunPython(record_collections, migrations.RunPython.noop),
    ]
