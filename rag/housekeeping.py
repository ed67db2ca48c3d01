"""Housekeeping, run every 10 minutes by a worker (``rag.tasks.tidy``).

Expired answers, reports of breaker processes long gone, questions older than the query log's
retention, finished jobs older than the jobs' retention (with the uploads kept for a retry) and the
oldest cached embeddings beyond the embedding cache's size. The retentions are edited in the admin
(Job settings), the embedding cache's size with the cache's settings.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from rag import answer_cache, embedding_cache
from rag.models import Job, JobStatus, QueryLog
from resilience import config, orders


def run() -> dict[str, int]:
    """Do all of it; returns how many rows of each kind went."""
    current = config.current()
    cfg = current.jobs
    now = timezone.now()
    _, by_model = QueryLog.objects.filter(created_at__lt=now - timedelta(days=cfg.query_log_retention_days)).delete()
    finished = Job.objects.filter(
        status__in=[JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED],
        finished_at__lt=now - timedelta(days=cfg.job_retention_days),
    )
    _, jobs_by_model = finished.delete()
    return {
        "expired_answers": answer_cache.purge_expired(),
        "breaker_reports": orders.prune_reports(),
        "query_log": by_model.get(QueryLog._meta.label, 0),
        "jobs": jobs_by_model.get(Job._meta.label, 0),
        "embeddings": embedding_cache.prune(current.cache.embedding_max_entries),
    }
