"""The procrastinate tasks: thin wrappers that run the services of ``rag.jobs`` in a worker.

``manage.py procrastinate worker`` runs them (``make worker``). Besides the jobs that users queue,
two run on a schedule in whichever worker is free: the sweep that queues again the jobs of a worker
that died (stalled-job recovery, from the workers' heartbeats) and the housekeeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from procrastinate import App, JobContext, RetryDecision, exceptions
from procrastinate import jobs as queue_jobs
from procrastinate.contrib.django import app
from procrastinate.retry import BaseRetryStrategy

from rag import housekeeping, jobs, metrics, warming
from rag.embeddings import embedder_for
from rag.models import Collection, Job, JobKind
from rag.reembedding import chunks_to_reembed, reembed_collections
from rag.sources import FileStatus
from resilience import config, orders
from resilience.errors import OllamaError, OllamaUnavailable

logger = logging.getLogger(__name__)

HOUSEKEEPING_QUEUE = "housekeeping"
# The sweep looks for dead workers a few times per stalled period.
SWEEP_SECONDS = max(1, min(59, settings.RAGSITE_WORKER_STALLED_SECONDS // 3))


def retry_delay(attempts: int) -> float:
    """Seconds before the next attempt, after ``attempts`` failed ones: doubling up to a ceiling."""
    cfg = config.current().jobs
    return min(cfg.retry_delay_seconds * 2 ** max(attempts - 1, 0), cfg.retry_delay_max_seconds)


class Backoff(BaseRetryStrategy):
    """Retry only what the task asked to retry (``RetryLater``), after ``retry_delay``."""

    def get_retry_decision(self, *, exception: BaseException, job: queue_jobs.Job) -> RetryDecision | None:
        if not isinstance(exception, jobs.RetryLater):
            return None
        return RetryDecision(retry_in={"seconds": retry_delay(job.attempts + 1)})


@contextmanager
def attempt_of(job: Job, attempt: int) -> Iterator[None]:
    """Turn what went wrong into a retry with backoff, or, after the last attempt, a failure."""
    try:
        yield
    except jobs.JobFailed:
        raise
    except Exception as exc:
        if isinstance(exc, jobs.Transient | OllamaUnavailable):
            reason = str(exc) if isinstance(exc, jobs.Transient) else f"embeddings unavailable: {exc.reason}"
        elif isinstance(exc, OllamaError):
            raise jobs.fail(job, f"embedding failed: {exc.reason}") from exc
        else:
            logger.exception("job %s: unexpected error", job.pk)
            reason = f"{type(exc).__name__}: {exc}"
        max_attempts = config.current().jobs.max_attempts
        if attempt >= max_attempts:
            raise jobs.fail(job, f"{reason} (gave up after {attempt} attempts)") from exc
        delay = retry_delay(attempt)
        raise jobs.wait_for_retry(job, reason, attempt=attempt, max_attempts=max_attempts, delay=delay) from exc


def started(context: JobContext, job_id: int) -> tuple[Job | None, int]:
    """The job's row marked running, and which attempt this is (None: cancelled or deleted)."""
    attempt = context.job.attempts + 1
    job = jobs.start(job_id, attempt=attempt)
    if job is None:
        logger.info("job %s is gone or cancelled; nothing to do", job_id)
    elif attempt > config.current().jobs.max_attempts:
        # Stalled-job recovery counts attempts too: a document that kills its worker every time stops here.
        raise jobs.fail(job, f"gave up after {attempt - 1} attempts: its worker stopped each time")
    return job, attempt


@app.task(name=jobs.TASKS[JobKind.INGEST], queue=jobs.QUEUE, pass_context=True, retry=Backoff())
def ingest(context: JobContext, job_id: int) -> str:
    job, attempt = started(context, job_id)
    if job is None:
        return "skipped"
    with attempt_of(job, attempt):
        result = jobs.run_ingest(job)
        if result.status == FileStatus.FAILED:
            if result.retryable:
                raise jobs.Transient(result.reason)
            raise jobs.fail(job, result.reason, keep_upload=False)
        jobs.finish(job, result=result.status, document_id=result.document_id)
    return result.status


@app.task(name=jobs.TASKS[JobKind.REEMBED], queue=jobs.QUEUE, pass_context=True, retry=Backoff())
def reembed(context: JobContext, job_id: int) -> str:
    job, attempt = started(context, job_id)
    if job is None:
        return "skipped"
    with attempt_of(job, attempt):
        params = job.params
        try:
            embedder = embedder_for(params.get("backend"), params.get("model"), params["batch_size"])
        except ValueError as exc:
            raise jobs.fail(job, str(exc)) from None
        collections = list(Collection.objects.filter(name__in=params["collections"]))
        total = chunks_to_reembed(collections=collections, model_name=embedder.name).count()
        jobs.progress(job, 0, total)
        done = 0

        def advance(count: int) -> None:
            nonlocal done
            done += count
            jobs.progress(job, done, total)

        report = reembed_collections(
            collections=collections, embedder=embedder, batch_size=params["batch_size"], progress=advance
        )
        jobs.finish(job, reason=f"re-embed: {report.summary()}")
    return "done"


@app.task(name=jobs.TASKS[JobKind.WARM_CACHE], queue=jobs.QUEUE, pass_context=True, retry=Backoff())
def warm(context: JobContext, job_id: int) -> str:
    job, attempt = started(context, job_id)
    if job is None:
        return "skipped"
    with attempt_of(job, attempt):
        # Each question's collections (a name alone in jobs queued before questions spanned several).
        questions = [
            ((names,) if isinstance(names, str) else tuple(names), question)
            for names, question in job.params["questions"]
        ]
        done = 0

        def report(question: warming.Question, outcome: warming.Outcome) -> None:
            nonlocal done
            done += 1
            jobs.progress(job, done, len(questions))

        begun = time.perf_counter()
        outcomes = warming.warm_questions(questions, concurrency=job.params.get("concurrency", 1), report=report)
        counts, summary = warming.summary(outcomes, time.perf_counter() - begun)
        if questions and all(kind == "failed" and "unavailable" in reason for kind, reason in outcomes):
            raise jobs.Transient(f"no question could be cached: {outcomes[0][1]}")
        jobs.finish(job, reason=summary if counts["failed"] else "")
    return "done"


# ON A SCHEDULE


@app.periodic(cron=f"* * * * * */{SWEEP_SECONDS}", periodic_id="sweep")
@app.task(name="rag.tasks.retry_stalled", queue=HOUSEKEEPING_QUEUE, queueing_lock="retry_stalled", priority=10)
async def retry_stalled(timestamp: int) -> int:
    """Queue again the jobs of workers whose heartbeat stopped (killed, machine lost).

    The document is ingested again from the start: a document is written in one transaction, so
    a worker killed midway left nothing of it behind.
    """
    stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=settings.RAGSITE_WORKER_STALLED_SECONDS)
    for job in stalled:
        logger.warning("job %s (%s): its worker stopped answering; queueing it again", job.id, job.task_name)
        await app.job_manager.retry_job(job)
    if stalled:
        await sync_to_async(jobs.requeue_stalled)([job.id for job in stalled if job.id is not None])
    return len(stalled)


@app.periodic(cron="*/10 * * * *", periodic_id="housekeeping")
@app.task(name="rag.tasks.housekeeping", queue=HOUSEKEEPING_QUEUE, queueing_lock="housekeeping")
async def tidy(timestamp: int) -> dict[str, int]:
    """Expired cache entries, stale breaker reports, old query log entries and finished jobs."""
    removed = await sync_to_async(housekeeping.run)()
    days = config.current().jobs.job_retention_days
    await app.job_manager.delete_old_jobs(
        nb_hours=days * 24, queue=None, include_failed=True, include_cancelled=True, include_aborted=True
    )
    return removed


# EVERY JOB


async def measured(call_next: Any, context: JobContext, worker: Any) -> Any:
    """Count every job by task and outcome and time it (rag.metrics), and carry the operators'
    breaker orders to this worker as a request would in a web process."""
    await sync_to_async(orders.sync)()
    begun = time.monotonic()
    outcome = "failed"
    try:
        result = await call_next()
        outcome = "succeeded"
        return result
    except jobs.RetryLater:
        outcome = "retried"
        raise
    except exceptions.JobAborted:
        outcome = "aborted"
        raise
    finally:
        seconds = time.monotonic() - begun
        task = context.job.task_name.rsplit(".", 1)[-1]
        await sync_to_async(metrics.record_job)(task=task, outcome=outcome, seconds=seconds)


def on_app_ready(ready_app: App) -> None:
    """PROCRASTINATE_ON_APP_READY: every worker measures its jobs."""
    ready_app.worker_defaults["worker_middleware"] = [*ready_app.worker_defaults.get("worker_middleware", []), measured]
