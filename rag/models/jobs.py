"""Background jobs as users and operators see them."""

from __future__ import annotations

from django.db import models

from rag.models.corpus import Document

# JOBS
# What users and operators see of a background job. The queue itself is procrastinate's (its own
# tables in the same database); a Job row outlives its queue entry and carries the progress.


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobKind(models.TextChoices):
    INGEST = "ingest", "ingest a document"
    REEMBED = "reembed", "re-embed collections"
    WARM_CACHE = "warm_cache", "warm the answer cache"


class Job(models.Model):
    kind = models.CharField(max_length=16, choices=JobKind.choices)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    # The collection's name, not a foreign key: the collection is created when the document is written.
    collection = models.CharField(max_length=64, blank=True)
    # The id of that collection when the job was queued (or when its worker created it): a job is
    # shown to those who may read that collection, and writes only into it, even after a rename
    # or a delete. None for a collection the job is to create.
    collection_pk = models.BigIntegerField(
        null=True, blank=True, help_text="The collection's id when the job was queued (None: a new collection)."
    )
    source = models.CharField(max_length=1024, blank=True, help_text="The document's source, for ingestion.")
    file_root = models.CharField(
        max_length=1024, blank=True, help_text="The folder a file was read from (never shown), as on its document."
    )
    title = models.CharField(max_length=512, blank=True, help_text="A title given with the upload, if any.")
    media_type = models.CharField(max_length=100, blank=True)
    params = models.JSONField(default=dict, blank=True, help_text="What a re-embed or warm-up job works on.")
    done = models.PositiveIntegerField(default=0, help_text="Chunks (or questions) done.")
    total = models.PositiveIntegerField(
        null=True, blank=True, help_text="Chunks (or questions) in all; unknown at first."
    )
    result = models.CharField(max_length=16, blank=True, help_text="new, updated or unchanged, for ingestion.")
    document = models.ForeignKey(Document, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.TextField(blank=True, help_text="Why it failed, or why it is waiting to be retried.")
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the worker that last ran it.")
    queue_job_id = models.BigIntegerField(null=True, blank=True, db_index=True, help_text="procrastinate's job id.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "finished_at"], name="job_status_finished")]

    def __str__(self) -> str:
        what = self.source or ", ".join(self.params.get("collections", [])) or self.get_kind_display()
        return f"#{self.pk} {self.kind} {what}"

    @property
    def finished(self) -> bool:
        return self.status in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)

    @property
    def url(self) -> str:
        return f"/api/jobs/{self.pk}"


class JobUpload(models.Model):
    """The bytes of a document to ingest, so that a worker on any machine can read them.

    Deleted when its job is done; kept for a retry while a failed or cancelled job is kept.
    """

    job = models.OneToOneField(Job, on_delete=models.CASCADE, primary_key=True, related_name="upload")
    data = models.BinaryField()

    def __str__(self) -> str:
        return f"upload of job {self.job_id} ({len(self.data)} bytes)"
