"""Jobs over the real queue: procrastinate workers in their own processes, killed for real.

Embeddings come from the fake Ollama (a real HTTP server in this process), slowed down so that a
job is still running when a test acts on it. Everything these tests write is committed (the
workers are other processes) and deleted afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client

from rag import jobs
from rag.chunking import chunk_text
from rag.models import ApiKey, Chunk, Collection, Document, Job, JobStatus, JobUpload
from rag.readers import parse_bytes
from resilience.fake_ollama import FakeOllama
from resilience.testing import saved_settings
from tests.fixtures_resilience import FAST_POOL
from tests.workers import wait_for, workers

# The mark gives the session its test database; the fixture below replaces pytest-django's
# per-test transaction, which the worker processes could not see into.
pytestmark = [pytest.mark.slow, pytest.mark.django_db]

COLLECTION = "queue-tests"


def long_text(topic: str, paragraphs: int = 40) -> bytes:
    body = "\n\n".join(
        f"{topic} note {i}. The {topic} committee met on day {i} and agreed on item {i}. "
        f"Every member read the {topic} report number {i} before the meeting, and the minutes of "
        f"meeting {i} were filed with the {topic} office the same afternoon by the secretary."
        for i in range(paragraphs)
    )
    return f"{topic.title()} minutes\n\n{body}".encode()


def expected_chunks(data: bytes) -> int:
    text = parse_bytes(data, "text/plain", fallback_title="x").text
    return len(chunk_text(text, size=settings.RAGSITE_CHUNK_SIZE, overlap=settings.RAGSITE_CHUNK_OVERLAP))


def queue(source: str, data: bytes) -> Job:
    return jobs.queue_document(collection_name=COLLECTION, source=source, data=data, media_type="text/plain")


def job(pk: int) -> Job:
    return Job.objects.get(pk=pk)


def chunks_of(source: str) -> list[int]:
    return list(
        Chunk.objects.filter(document__collection__name=COLLECTION, document__source=source).values_list(
            "ordinal", flat=True
        )
    )


@pytest.fixture
def _django_db_helper(django_db_setup, django_db_blocker) -> Iterator[None]:
    """Database access without a test transaction: what the tests write is committed."""
    with django_db_blocker.unblock():
        yield


@pytest.fixture(scope="module")
def fake(django_db_setup, django_db_blocker) -> Iterator[FakeOllama]:
    """The fake Ollama, and the settings every worker reads from the database: embeddings from the
    fake two chunks a request, quick retries, a breaker that recovers in half a second."""
    with django_db_blocker.unblock():
        assert connection.settings_dict["NAME"].startswith("test"), "refusing to commit to a non-test database"
    with (
        django_db_blocker.unblock(),
        FakeOllama() as fake_ollama,
        saved_settings(
            provider={
                "ollama_base_url": fake_ollama.url,
                "embedding_backend": "ollama",
                "embedding_model": "all-minilm",
                "embedding_batch_size": 2,
            },
            pool=FAST_POOL,
            breaker={"recovery_timeout": 0.5},
            jobs={"retry_delay_seconds": 0.2, "retry_delay_max_seconds": 1.0, "max_attempts": 50},
        ),
    ):
        try:
            yield fake_ollama
        finally:
            Job.objects.all().delete()
            Collection.objects.filter(name=COLLECTION).delete()
            ApiKey.objects.filter(name="queue tests").delete()
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM procrastinate_periodic_defers; DELETE FROM procrastinate_jobs")


@pytest.fixture
def ollama(fake) -> Iterator[FakeOllama]:
    """Each test starts with a healthy fake."""
    fake.set_mode("healthy")
    yield fake
    fake.set_mode("healthy")


def test_a_queued_upload_is_done_by_a_worker_and_a_cancelled_one_never_runs(ollama, tmp_path: Path):
    _, key = ApiKey.issue(name="queue tests", all_collections=True, can_write=True)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")

    def upload(name: str, data: bytes) -> dict:
        response = client.post("/api/documents", {"file": SimpleUploadedFile(name, data), "collection": COLLECTION})
        assert response.status_code == 202, response.content
        assert response["Location"] == response.json()["job"]["url"]
        return response.json()["job"]

    first = upload("cancelled.txt", long_text("garden", 3))
    assert first["status"] == "queued" and first["progress"] == {"done": 0, "total": None}
    cancelled = client.delete(first["url"])
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = client.delete(first["url"])
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"

    data = long_text("budget", 6)
    second = upload("budget.txt", data)
    with workers(tmp_path, 1) as (worker,):
        wait_for(lambda: job(second["id"]).status == JobStatus.DONE, timeout=60, what="the upload", worker=worker)

    body = client.get(second["url"]).json()
    total = expected_chunks(data)
    assert body["status"] == "done" and body["result"] == "new" and body["reason"] == ""
    assert body["progress"] == {"done": total, "total": total}
    document = Document.objects.get(pk=body["document_id"])
    assert document.source == "upload:budget.txt" and document.chunks.count() == total
    assert not JobUpload.objects.filter(job_id=second["id"]).exists(), "the upload is deleted once done"
    # The cancelled job was queued first, and the worker never took it.
    assert job(first["id"]).status == JobStatus.CANCELLED and job(first["id"]).started_at is None
    assert not Document.objects.filter(source="upload:cancelled.txt").exists()


def test_two_workers_never_ingest_one_file_at_the_same_time(ollama, tmp_path: Path):
    ollama.set_mode("slow", seconds=0.15, paths=["/api/embed"])
    sources = {f"/data/report-{i}.txt": long_text(f"report{i}", 8) for i in range(4)}
    queued = [queue(source, data) for _ in range(2) for source, data in sources.items()]

    with workers(tmp_path, 2) as pair:
        wait_for(
            lambda: all(job(j.pk).finished for j in queued), timeout=120, what="every job to finish", worker=pair[0]
        )

    finished = [job(j.pk) for j in queued]
    assert [j.status for j in finished] == [JobStatus.DONE] * len(queued), [j.reason for j in finished]
    assert len({j.worker for j in finished}) == 2, "both worker processes took jobs"
    for source, data in sources.items():
        runs = sorted((j for j in finished if j.source == source), key=lambda j: j.started_at)
        assert [j.result for j in runs] == ["new", "unchanged"]
        assert runs[0].finished_at <= runs[1].started_at, "the second ingestion waited for the first"
        assert Document.objects.filter(collection__name=COLLECTION, source=source).count() == 1
        assert sorted(chunks_of(source)) == list(range(expected_chunks(data)))


def test_a_worker_killed_mid_file_is_replaced_and_the_file_has_every_chunk_once(ollama, tmp_path: Path):
    ollama.set_mode("slow", seconds=0.4, paths=["/api/embed"])
    data = long_text("harbour", 40)
    total = expected_chunks(data)
    queued = queue("/data/harbour.txt", data)

    with workers(tmp_path, 1) as (doomed,):
        wait_for(lambda: 4 <= job(queued.pk).done < total, timeout=60, what="the file half embedded", worker=doomed)
        doomed.kill()
    killed_in = job(queued.pk)
    assert killed_in.status == JobStatus.RUNNING and killed_in.done < total
    assert chunks_of("/data/harbour.txt") == [], "nothing of a document is written before all of it"

    ollama.set_mode("healthy")
    with workers(tmp_path, 1) as (rescuer,):
        wait_for(lambda: job(queued.pk).status == JobStatus.DONE, timeout=60, what="the rescue", worker=rescuer)
    done = job(queued.pk)
    assert done.attempts == 2 and done.worker.endswith(f":{rescuer.pid}") and done.result == "new"
    assert sorted(chunks_of("/data/harbour.txt")) == list(range(total))
    assert Document.objects.filter(source="/data/harbour.txt").count() == 1


def test_sigterm_lets_the_current_file_finish(ollama, tmp_path: Path):
    ollama.set_mode("slow", seconds=0.2, paths=["/api/embed"])
    data = long_text("library", 20)
    queued = queue("/data/library.txt", data)
    with workers(tmp_path, 1) as (worker,):
        wait_for(lambda: job(queued.pk).done >= 2, timeout=60, what="the file started", worker=worker)
        assert job(queued.pk).status == JobStatus.RUNNING
        assert worker.stop() == 0
    assert job(queued.pk).status == JobStatus.DONE
    assert sorted(chunks_of("/data/library.txt")) == list(range(expected_chunks(data)))


def test_with_ollama_down_a_job_waits_and_is_done_once_it_is_back(ollama, tmp_path: Path):
    ollama.set_mode("down")
    data = long_text("canteen", 5)
    queued = queue("/data/canteen.txt", data)
    with workers(tmp_path, 1) as (worker,):
        waiting = wait_for(
            lambda: (j := job(queued.pk)).attempts >= 2 and j.status == JobStatus.QUEUED and j,
            timeout=60,
            what="two failed attempts",
            worker=worker,
        )
        assert waiting.reason.startswith("embeddings unavailable:"), waiting.reason
        assert "next at" in waiting.reason and not chunks_of("/data/canteen.txt")

        ollama.set_mode("healthy")
        wait_for(lambda: job(queued.pk).status == JobStatus.DONE, timeout=60, what="the job done", worker=worker)
    assert job(queued.pk).reason == "" and sorted(chunks_of("/data/canteen.txt")) == list(range(expected_chunks(data)))


def test_after_its_last_attempt_a_job_fails_with_the_reason_and_keeps_its_upload(ollama, tmp_path: Path):
    ollama.set_mode("down")
    with saved_settings(jobs={"max_attempts": 2}):
        queued = queue("/data/gym.txt", long_text("gym", 2))
        with workers(tmp_path, 1) as (worker,):
            wait_for(lambda: job(queued.pk).finished, timeout=60, what="the job to give up", worker=worker)
    failed = job(queued.pk)
    assert failed.status == JobStatus.FAILED and failed.attempts == 2
    assert failed.reason.startswith("embeddings unavailable:") and "gave up after 2 attempts" in failed.reason
    assert not Document.objects.filter(source="/data/gym.txt").exists()
    assert jobs.can_retry(failed), "the upload is kept, so an operator can retry it"


def test_a_file_that_cannot_be_read_fails_its_job_and_leaves_nothing(ollama, tmp_path: Path):
    broken = b"%PDF-1.4\n" + b"\x00garbage" * 100
    queued = jobs.queue_document(
        collection_name=COLLECTION, source="upload:broken.pdf", data=broken, media_type="application/pdf"
    )
    with workers(tmp_path, 1) as (worker,):
        wait_for(lambda: job(queued.pk).finished, timeout=60, what="the job to fail", worker=worker)
    failed = job(queued.pk)
    assert failed.status == JobStatus.FAILED and failed.attempts == 1, failed.reason
    assert "PDF" in failed.reason
    assert not Document.objects.filter(source="upload:broken.pdf").exists()
    assert not JobUpload.objects.filter(job=failed).exists() and not jobs.can_retry(failed)
    assert json.loads(Client().get(failed.url).content)["reason"] == failed.reason
