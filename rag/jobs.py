"""Background jobs: ingestion, re-embedding and cache warming queued on procrastinate.

The queue lives in the same Postgres (procrastinate's tables), so a worker on any machine pointed
at the database can take a job. Each job has a ``Job`` row that users and operators read: status,
progress, the document it produced, the reason it failed. An upload's bytes are stored with it
(``JobUpload``) so the worker needs no shared disk.

These are the services; ``rag.tasks`` holds the thin procrastinate tasks that call them, and the
API, the commands and the admin queue through the functions here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from procrastinate.contrib.django import app

from rag.ingestion import Into, ingest_document
from rag.models import Collection, Document, Job, JobKind, JobStatus, JobUpload
from rag.readers import ReadError, decode_text
from rag.sources import FileResult, FileStatus, SourceItem
from rag.sql import lazy_commit

logger = logging.getLogger(__name__)

QUEUE = "jobs"
# Task names, so that queueing needs no import of rag.tasks (which imports this module).
TASKS = {JobKind.INGEST: "rag.tasks.ingest", JobKind.REEMBED: "rag.tasks.reembed", JobKind.WARM_CACHE: "rag.tasks.warm"}
WORKER = f"{socket.gethostname()}:{os.getpid()}"


class Transient(Exception):
    """Raised by a job's work when it cannot finish for now (embeddings unavailable)."""


class RetryLater(Exception):
    """The job waits for its next attempt; the queue runs it again later."""


class JobFailed(Exception):
    """The job failed for good; its row says why."""


class JobConflict(Exception):
    """The job is not in a state that allows it (cancel a started job, retry a running one)."""


# QUEUEING


def check_upload(data: bytes, media_type: str) -> None:
    """Refuse at once what can be seen to be unreadable without parsing (the worker parses).

    Raises ReadError with the same reasons ingestion would give.
    """
    if not data.strip():
        raise ReadError("file is empty")
    if media_type == "application/pdf":
        if b"%PDF-" not in data[:1024]:
            raise ReadError("not a PDF file")
        return
    text = decode_text(data, html=media_type == "text/html")
    if "\x00" in text:
        raise ReadError("contains NUL bytes: not a text file")


def _lock(job: Job) -> str:
    """One ingestion of a document at a time: jobs sharing a lock run one after another."""
    key = f"{job.collection}\0{job.file_root}\0{job.source}"
    return "ingest:" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _defer(job: Job) -> Job:
    """Put the job on the queue, in the caller's transaction: no queue entry without its row."""
    lock = _lock(job) if job.kind == JobKind.INGEST else f"{job.kind}"
    deferrer = app.configure_task(TASKS[JobKind(job.kind)], queue=QUEUE, lock=lock)
    job.queue_job_id = deferrer.defer(job_id=job.pk)
    job.save(update_fields=["queue_job_id"])
    return job


@transaction.atomic
def queue_document(
    *,
    collection_name: str,
    source: str,
    data: bytes,
    media_type: str,
    title: str = "",
    fallback_title: str = "",
    root: str = "",
) -> Job:
    """Queue one document for ingestion; raises ReadError when it is plainly unreadable.

    ``title`` replaces the document's own title; ``fallback_title`` is used when it has none;
    ``root`` is the folder of a file read by the ingest command (the document keeps it).
    """
    check_upload(data, media_type)
    job = Job.objects.create(
        kind=JobKind.INGEST,
        collection=collection_name,
        # The collection as it is now: the worker writes into this one only (a rename or a delete
        # meanwhile fails the job instead of creating a new, public collection of that name).
        collection_pk=Collection.objects.filter(name=collection_name).values_list("pk", flat=True).first(),
        source=source,
        file_root=root,
        title=title[:512],
        media_type=media_type,
        params={"fallback_title": fallback_title or source},
    )
    JobUpload.objects.create(job=job, data=data)
    return _defer(job)


def queue_items(items: Iterable[SourceItem | FileResult], *, collection_name: str) -> list[Job]:
    """One job per document (``manage.py ingest --background``). A file that could not even be read
    gets a failed job with the reason, so every file given is accounted for."""
    jobs = []
    for item in items:
        if isinstance(item, FileResult):
            jobs.append(
                Job.objects.create(
                    kind=JobKind.INGEST,
                    collection=collection_name,
                    source=item.source,
                    status=JobStatus.FAILED,
                    reason=item.reason,
                    finished_at=timezone.now(),
                )
            )
            continue
        try:
            jobs.append(
                queue_document(
                    collection_name=collection_name,
                    source=item.source,
                    data=item.data,
                    media_type=item.media_type,
                    fallback_title=item.fallback_title,
                    root=item.root,
                )
            )
        except ReadError as exc:
            failed = FileResult(item.source, FileStatus.FAILED, reason=str(exc))
            jobs.extend(queue_items([failed], collection_name=collection_name))
    return jobs


@transaction.atomic
def queue_reembed(*, collections: list[str], backend: str | None, model: str | None, batch_size: int) -> Job:
    params = {"collections": collections, "backend": backend, "model": model, "batch_size": batch_size}
    return _defer(Job.objects.create(kind=JobKind.REEMBED, collection=",".join(collections)[:64], params=params))


@transaction.atomic
def queue_warm_cache(*, questions: list[tuple[tuple[str, ...], str]], concurrency: int) -> Job:
    params = {"questions": [[list(names), question] for names, question in questions], "concurrency": concurrency}
    names = sorted({name for collections, _ in questions for name in collections})
    return _defer(
        Job.objects.create(
            kind=JobKind.WARM_CACHE, collection=",".join(names)[:64], params=params, total=len(questions)
        )
    )


def cancel_job(*, job: Job) -> Job:
    """Cancel a job no worker has taken yet (queued, or waiting for a retry); raises JobConflict."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.status != JobStatus.QUEUED or job.queue_job_id is None:
            raise JobConflict(f"The job is {job.status}; only a queued job can be cancelled.")
        if not app.job_manager.cancel_job_by_id(job.queue_job_id):
            raise JobConflict("A worker has just started the job; it can no longer be cancelled.")
        job.status = JobStatus.CANCELLED
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "finished_at"])
    return job


def can_retry(job: Job) -> bool:
    """Failed and cancelled jobs can run again, if an ingestion still has its upload."""
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        return False
    return job.kind != JobKind.INGEST or JobUpload.objects.filter(job=job).exists()


@transaction.atomic
def retry_job(*, job: Job) -> Job:
    """Queue a failed or cancelled job again, with a fresh count of attempts (the admin's retry)."""
    if not can_retry(job):
        raise JobConflict(f"The job is {job.status} or its upload is gone; it cannot be retried.")
    job.status, job.reason, job.attempts, job.done = JobStatus.QUEUED, "", 0, 0
    job.started_at = job.finished_at = None
    job.save()
    return _defer(job)


# RUNNING (called by rag.tasks in a worker)


def start(job_id: int, *, attempt: int) -> Job | None:
    """Mark the job running in this worker; None when it is gone or was cancelled meanwhile."""
    # Bookkeeping: committed without waiting for the disk (a crash loses at most the mark).
    with lazy_commit():
        updated = Job.objects.filter(pk=job_id, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).update(
            status=JobStatus.RUNNING, attempts=attempt, worker=WORKER, started_at=timezone.now(), done=0
        )
    return Job.objects.filter(pk=job_id).first() if updated else None


def progress(job: Job, done: int, total: int | None) -> None:
    with lazy_commit():
        Job.objects.filter(pk=job.pk).update(done=done, total=total)


def retry_at(seconds: float) -> datetime:
    return timezone.now() + timedelta(seconds=seconds)


def wait_for_retry(job: Job, reason: str, *, attempt: int, max_attempts: int, delay: float) -> RetryLater:
    """Back to queued, saying why and when it runs again; returns the exception the task raises."""
    at = timezone.localtime(retry_at(delay))
    message = f"{reason}; attempt {attempt} of {max_attempts} failed, next at {at:%H:%M:%S}"
    Job.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED, reason=message)
    logger.warning("job %s: %s", job.pk, message)
    return RetryLater(message)


def fail(job: Job, reason: str, *, keep_upload: bool = True) -> JobFailed:
    """Failed for good; returns the exception the task raises. An upload that can never be read
    is deleted at once, one that might go through later is kept for a retry."""
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, reason=reason, finished_at=timezone.now())
    if not keep_upload:
        JobUpload.objects.filter(job=job).delete()
    logger.warning("job %s failed: %s", job.pk, reason)
    return JobFailed(reason)


def finish(job: Job, *, result: str = "", document_id: int | None = None, reason: str = "") -> None:
    with transaction.atomic():
        fields: dict[str, Any] = {"status": JobStatus.DONE, "finished_at": timezone.now(), "reason": reason}
        if result:
            fields["result"] = result
        if document_id is not None:
            fields["document_id"] = document_id
            if job.collection_pk is None:  # the collection it created, or found
                fields["collection_pk"] = Document.objects.filter(pk=document_id).values("collection_id")[:1]
        Job.objects.filter(pk=job.pk).update(**fields)
        JobUpload.objects.filter(job=job).delete()


def run_ingest(job: Job) -> FileResult:
    """Ingest the job's document. Unchanged, new or updated: done. Returns the result; a failure is
    returned too (the task decides between a retry and failing)."""
    upload = JobUpload.objects.filter(job=job).first()
    if upload is None:
        return FileResult(job.source, FileStatus.FAILED, reason="the upload is no longer stored")
    return ingest_document(
        collection_name=job.collection,
        source=job.source,
        data=bytes(upload.data),
        media_type=job.media_type,
        title=job.title,
        fallback_title=job.params.get("fallback_title") or job.source,
        root=job.file_root,
        chunk_progress=lambda done, total: progress(job, done, total),
        into=Into(job.collection_pk),
    )


def requeue_stalled(queue_job_ids: list[int]) -> int:
    """Jobs of a worker that died are queued again by the sweep: say so on their rows."""
    return Job.objects.filter(queue_job_id__in=queue_job_ids, status=JobStatus.RUNNING).update(
        status=JobStatus.QUEUED, reason="its worker stopped answering; queued again"
    )
