"""Documents read from files remember their folder apart from their name.

A file-backed document's source was its absolute path, shown to every caller and read again by
the admin's re-ingest whatever wrote it (an API caller could name any server file). Now the
source is the path relative to the folder (file_root, never shown), and re-ingest reads only
folders in RAGSITE_DOCUMENT_ROOTS.
"""

from pathlib import PurePosixPath

from django.db import migrations, models


def split_absolute_sources(apps, schema_editor):
    Document = apps.get_model("rag", "Document")
    for document in Document.objects.filter(source__startswith="/").only("id", "source"):
        path = PurePosixPath(document.source)
        document.file_root, document.source = str(path.parent), path.name
        document.save(update_fields=["file_root", "source"])


def join_sources(apps, schema_editor):
    Document = apps.get_model("rag", "Document")
    for document in Document.objects.exclude(file_root="").only("id", "source", "file_root"):
        document.source = str(PurePosixPath(document.file_root) / document.source)
        document.file_root = ""
        document.save(update_fields=["file_root", "source"])


class Migration(migrations.Migration):

    dependencies = [
        ('rag', '0007_throttle_counts'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='document',
            name='document_unique_source',
        ),
        migrations.AddField(
            model_name='document',
            name='file_root',
            field=models.CharField(blank=True, default='', help_text='The folder a file was read from (never shown to callers); empty for documents that are not files.', max_length=1024),
        ),
        migrations.AlterField(
            model_name='document',
            name='source',
            field=models.CharField(help_text="Where the text came from: a file's path relative to its folder, or a label given through the API.", max_length=1024),
        ),
        migrations.RunPython(split_absolute_sources, join_sources),
        migrations.AddConstraint(
            model_name='document',
            constraint=models.UniqueConstraint(fields=('collection', 'file_root', 'source'), name='document_unique_file_source'),
        ),
    ]
