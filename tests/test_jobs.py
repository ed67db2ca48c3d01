"""Jobs without a worker: what the API, the commands, the admin, housekeeping and /metrics show.

Running jobs in worker processes is tests/test_jobs_queue.py.
"""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from rag import housekeeping, jobs, metrics, tasks
from rag.models import CachedAnswer, Chunk, Collection, Document, Job, JobKind, JobStatus, JobUpload, QueryLog

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_settings")]


def queue_status(job: Job) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT status FROM procrastinate_jobs WHERE id = %s", [job.queue_job_id])
        return cursor.fetchone()[0]


def post_json(client, body: dict):
    return client.post("/api/documents", json.dumps(body), content_type="application/json")


# THE API


def test_json_text_is_queued_when_asked_or_long(key_client, settings):
    settings.RAGSITE_INLINE_MAX_CHARS = 50
    short = post_json(key_client, {"title": "Short", "text": "Bring your badge.", "collection": "api-jobs"})
    assert short.status_code == 201, "short text is still ingested inline"
    asked = post_json(key_client, {"title": "Asked", "text": "Bring a pen.", "collection": "api-jobs", "async": True})
    long = post_json(key_client, {"title": "Long", "text": "word " * 20, "collection": "api-jobs"})
    for response, title in ((asked, "Asked"), (long, "Long")):
        assert response.status_code == 202, response.content
        job = Job.objects.get(pk=response.json()["job"]["id"])
        assert job.source == f"api:{title}" and job.title == title and queue_status(job) == "todo"
    assert list(Document.objects.filter(collection__name="api-jobs").values_list("title", flat=True)) == ["Short"]


def test_a_queued_job_can_be_cancelled_once_and_only_with_a_key(key_client):
    anonymous = Client()
    response = key_client.post(
        "/api/documents", {"file": SimpleUploadedFile("a.md", b"# A\n\nText."), "collection": "c"}
    )
    url = response.json()["job"]["url"]
    assert anonymous.get(url).status_code == 200, "reading a job is like reading documents"
    refused = anonymous.delete(url)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "not_authenticated"

    cancelled = key_client.delete(url)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    assert queue_status(Job.objects.get(pk=cancelled.json()["id"])) == "cancelled"
    again = key_client.delete(url)
    assert again.status_code == 409 and "only a queued job" in again.json()["error"]["message"]


def test_unknown_jobs_are_404(key_client):
    for response in (key_client.get("/api/jobs/999999"), key_client.delete("/api/jobs/999999")):
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_a_pdf_upload_that_is_not_a_pdf_is_refused_at_once(key_client):
    response = key_client.post("/api/documents", {"file": SimpleUploadedFile("x.pdf", b"hello"), "collection": "c"})
    assert response.status_code == 400 and "not a PDF" in str(response.json()["error"]["fields"]["file"])
    assert not Job.objects.exists()


# THE COMMANDS


def test_ingest_background_queues_a_job_per_file_and_reports_the_unreadable(write_files, tmp_path):
    root = write_files({"a.txt": "Alpha text.", "sub/b.md": "# Beta\n\nBeta text.", "sub/skip.exe": "x"})
    out = StringIO()
    with pytest.raises(CommandError, match=r"1 file\(s\) could not be queued.*queued 2 file\(s\)"):
        call_command(
            "ingest", str(root), str(tmp_path / "missing.txt"), "--background", "--collection", "bg", stderr=out
        )
    assert "missing.txt: no such file or directory" in out.getvalue()
    queued = Job.objects.filter(status=JobStatus.QUEUED).order_by("source")
    assert [j.source.rsplit("/", 1)[-1] for j in queued] == ["a.txt", "b.md"]
    assert bytes(JobUpload.objects.get(job=queued[0]).data) == b"Alpha text."
    assert all(queue_status(j) == "todo" for j in queued)
    assert not Document.objects.filter(collection__name="bg").exists(), "nothing is ingested by the command"
    assert Job.objects.get(status=JobStatus.FAILED).reason == "no such file or directory"


def test_reembed_and_warm_cache_background_queue_one_job_each(write_files):
    Collection.objects.create(name="hr")
    out = call_command("reembed", "--collection", "hr", "--background", "--backend", "ollama", stdout=StringIO())
    job = Job.objects.get(kind=JobKind.REEMBED)
    assert f"Queued job {job.pk}" in out and job.params["collections"] == ["hr"] and queue_status(job) == "todo"

    questions = write_files({"q.txt": "What is the leave policy?\nHow do I book a room?\n"}) / "q.txt"
    out = call_command("warm_cache", "--file", str(questions), "--collection", "hr", "--background", stdout=StringIO())
    warm = Job.objects.get(kind=JobKind.WARM_CACHE)
    assert f"Queued job {warm.pk}: warm 2 question(s)" in out and warm.total == 2


# RE-EMBEDDING AND WARMING, RUN HERE (the queue tests run ingestion in real workers)


class FirstAttempt:
    """What a task reads of procrastinate's job context: which attempt this is."""

    job = type("QueueJob", (), {"attempts": 0})()


def test_a_reembed_job_converts_every_chunk_and_counts_them(ollama_facilities):
    # The new model's index is created mid-transaction here (a worker runs in autocommit): Postgres
    # refuses while foreign-key checks of this test's inserts are still pending.
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    job = jobs.queue_reembed(collections=["facilities"], backend="ollama", model="nomic-embed-text", batch_size=2)
    assert tasks.reembed(FirstAttempt(), job.pk) == "done"
    job.refresh_from_db()
    assert job.status == JobStatus.DONE and job.done == job.total == 3 and job.attempts == 1
    models = set(Chunk.objects.filter(collection__name="facilities").values_list("embedding_model", flat=True))
    assert models == {"ollama/nomic-embed-text"}


def test_a_warm_up_job_caches_its_questions(ollama_facilities):
    questions = [(("facilities",), "Where is the boiler room?"), (("facilities",), "When is lunch served?")]
    job = jobs.queue_warm_cache(questions=questions, concurrency=1)
    tasks.warm(FirstAttempt(), job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.DONE and job.done == job.total == 2 and job.reason == ""
    facilities = Collection.objects.get(name="facilities").pk
    assert CachedAnswer.objects.filter(collection_ids=[facilities]).count() == 2


# HOUSEKEEPING


def restricted(name: str) -> Collection:
    from django.contrib.auth.models import Group

    from rag.collections import restrict_collection

    return restrict_collection(name=name, groups=[Group.objects.create(name=f"team-{name}")])


def queue_memo(collection: str) -> Job:
    return jobs.queue_document(
        collection_name=collection, source="api:memo", data=b"The audit starts on Monday.", media_type="text/plain"
    )


def test_a_job_of_a_restricted_collection_renamed_since_stays_hidden_and_writes_nothing():
    collection = restricted("hr-secret")
    queued = queue_memo("hr-secret")
    assert Client().get(queued.url).status_code == 404
    collection.name = "hr-secret-2025"
    collection.save()
    assert Client().get(queued.url).status_code == 404, "the job still belongs to the renamed collection"
    with pytest.raises(jobs.JobFailed, match="collection 'hr-secret' was deleted or renamed after"):
        tasks.ingest(FirstAttempt(), queued.pk)
    assert not Collection.objects.filter(name="hr-secret").exists(), "no public collection of the old name"
    assert not Document.objects.filter(source="api:memo").exists()


def test_a_job_of_a_deleted_restricted_collection_is_for_operators_only(admin_client):
    from rag.collections import delete_collection

    collection = restricted("hr-gone")
    queued = queue_memo("hr-gone")
    delete_collection(collection=collection)
    assert Client().get(queued.url).status_code == 404, "not shown as a job of a collection not created yet"
    assert admin_client.get(queued.url).json()["collection"] == "hr-gone"
    with pytest.raises(jobs.JobFailed, match="collection 'hr-gone' was deleted or renamed after"):
        tasks.ingest(FirstAttempt(), queued.pk)
    assert not Collection.objects.filter(name="hr-gone").exists(), "not created again, public"


def test_a_job_for_a_new_collection_never_writes_into_one_created_restricted_meanwhile():
    queued = queue_memo("fresh-name")
    restricted("fresh-name")
    with pytest.raises(jobs.JobFailed, match="collection 'fresh-name' was created restricted after"):
        tasks.ingest(FirstAttempt(), queued.pk)
    assert not Document.objects.filter(source="api:memo").exists()


def test_a_job_for_a_new_collection_creates_it_and_belongs_to_it():
    queued = queue_memo("fresh-public")
    assert queued.collection_pk is None
    assert tasks.ingest(FirstAttempt(), queued.pk) == "new"
    queued.refresh_from_db()
    assert queued.collection_pk == Collection.objects.get(name="fresh-public").pk
    assert Client().get(queued.url).json()["status"] == "done"


def test_housekeeping_keeps_what_its_retention_says(resilience_config):
    resilience_config(jobs={"query_log_retention_days": 30, "job_retention_days": 7})
    now = timezone.now()
    for days in (31, 29):
        row = QueryLog.objects.create(question=f"{days}", question_hash="0", collection="c", cache="miss", latency_ms=1)
        QueryLog.objects.filter(pk=row.pk).update(created_at=now - timedelta(days=days))
    old = Job.objects.create(kind=JobKind.INGEST, status=JobStatus.DONE, finished_at=now - timedelta(days=8))
    recent = Job.objects.create(kind=JobKind.INGEST, status=JobStatus.FAILED, finished_at=now - timedelta(days=6))
    waiting = Job.objects.create(kind=JobKind.INGEST, status=JobStatus.QUEUED)
    JobUpload.objects.create(job=old, data=b"x")

    removed = housekeeping.run()
    assert removed["query_log"] == 1 and removed["jobs"] == 1
    assert list(QueryLog.objects.values_list("question", flat=True)) == ["29"]
    assert set(Job.objects.values_list("pk", flat=True)) == {recent.pk, waiting.pk}
    assert not JobUpload.objects.exists()


class CountingEmbedder:
    """A deterministic three-dimensional embedder that remembers the texts it was asked for."""

    name = "counting-test"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def embed(self, texts: list[str]):
        import numpy as np

        self.asked.extend(texts)
        return np.array([[len(t), 1.0, 0.0] for t in texts], dtype=np.float32)


def test_housekeeping_keeps_the_newest_cached_embeddings_within_the_bound(resilience_config):
    from rag.embedding_cache import embed_cached
    from rag.models import CachedEmbedding

    resilience_config(cache={"embedding_max_entries": 3})
    CachedEmbedding.objects.all().delete()  # vectors other modules committed (rolled back after the test)
    embedder = CountingEmbedder()
    texts = ["one", "two", "three", "four", "five"]
    now = timezone.now()
    for age, text in zip(range(5, 0, -1), texts, strict=True):
        embed_cached(embedder, [text])
        CachedEmbedding.objects.filter(pk=CachedEmbedding.objects.latest("id").pk).update(
            created_at=now - timedelta(minutes=age)
        )

    removed = housekeeping.run()

    assert removed["embeddings"] == 2
    assert CachedEmbedding.objects.filter(model=embedder.name).count() == 3
    embedder.asked.clear()
    embed_cached(embedder, ["one", "four", "five"])  # "one" went; the newest stayed
    assert embedder.asked == ["one"]
    assert housekeeping.run()["embeddings"] == 1  # the bound holds after the text came back


# METRICS


def test_metrics_count_jobs_by_task_and_outcome_and_show_the_queue(key_client, resilience_config):
    key_client.post("/api/documents", {"file": SimpleUploadedFile("q.txt", b"Queued."), "collection": "m"})
    metrics.record_job(task="ingest", outcome="succeeded", seconds=0.3)
    metrics.record_job(task="ingest", outcome="succeeded", seconds=20)
    metrics.record_job(task="ingest", outcome="failed", seconds=2)
    text = Client().get("/metrics").content.decode()
    assert 'ragsite_jobs_total{outcome="succeeded",task="ingest"} 2.0' in text
    assert 'ragsite_jobs_total{outcome="failed",task="ingest"} 1.0' in text
    assert 'ragsite_jobs_queued{task="ingest"} 1.0' in text
    assert 'ragsite_job_duration_seconds_bucket{le="0.5",task="ingest"} 1.0' in text
    assert 'ragsite_job_duration_seconds_bucket{le="60",task="ingest"} 3.0' in text
    assert 'ragsite_job_duration_seconds_sum{task="ingest"} 22.3' in text


# THE ADMIN


def failed_job() -> Job:
    job = jobs.queue_document(collection_name="adm", source="upload:x.txt", data=b"Some text.", media_type="text/plain")
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.FAILED,
        reason="embeddings unavailable: circuit open",
        done=4,
        total=10,
        finished_at=timezone.now(),
    )
    return Job.objects.get(pk=job.pk)


def test_the_jobs_page_shows_progress_and_reason_and_retries(admin_client):
    job = failed_job()
    page = admin_client.get("/admin/rag/job/").content.decode()
    assert "embeddings unavailable: circuit open" in page and "4 / 10 chunks (40 %)" in page
    response = admin_client.post("/admin/rag/job/", {"action": "retry", "_selected_action": [job.pk]}, follow=True)
    assert "Queued 1 job(s) again." in response.content.decode()
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.reason == "" and job.attempts == 0 and queue_status(job) == "todo"


def test_the_jobs_page_cancels_queued_jobs_only(admin_client):
    queued = jobs.queue_document(collection_name="adm", source="upload:y.txt", data=b"Text.", media_type="text/plain")
    done = Job.objects.create(kind=JobKind.INGEST, status=JobStatus.DONE, finished_at=timezone.now())
    response = admin_client.post(
        "/admin/rag/job/", {"action": "cancel", "_selected_action": [queued.pk, done.pk]}, follow=True
    )
    assert "Cancelled 1 job(s); 1 had started or finished already." in response.content.decode()
    assert Job.objects.get(pk=queued.pk).status == JobStatus.CANCELLED
    assert Job.objects.get(pk=done.pk).status == JobStatus.DONE


def test_the_overview_shows_the_queue_and_the_last_hours_failures(admin_client):
    jobs.queue_document(collection_name="adm", source="upload:z.txt", data=b"Text.", media_type="text/plain")
    failed_job()
    page = admin_client.get("/admin/overview/").content.decode()
    assert "1 waiting, 0 running" in page
    assert 'class="state-open">1<' in page and "upload:x.txt: embeddings unavailable: circuit open" in page
