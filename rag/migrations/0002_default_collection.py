from django.db import migrations


def create_default(apps, schema_editor):
    Collection = apps.get_model("rag", "Collection")
    Collection.objects.get_or_create(name="default", defaults={"description": "The default collection."})


class Migration(migrations.Migration):
    dependencies = [("rag", "0001_initial")]

    operations = [migrations.RunPython(create_default, migrations.RunPython.noop)]
