"""The operations views of the admin: breakers, semantic cache, documents, query log, overview."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from rag.models import CachedAnswer, Collection, Document, Job, JobStatus, QueryLog
from resilience import orders
from resilience.breaker import get_breaker
from resilience.models import BreakerCommand, BreakerReport

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_settings")]


@pytest.fixture
def facilities(ollama_facilities) -> Collection:
    """The small collection embedded and answered by the fake Ollama (see conftest)."""
    return Collection.objects.get(name="facilities")


def ask(client, question: str, collection: str = "facilities") -> dict:
    payload = json.dumps({"question": question, "collection": collection})
    response = client.post("/api/query", payload, content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


# ACCESS

PAGES = [
    "/admin/",
    "/admin/overview/",
    "/admin/resilience/breakersettings/1/change/",
    "/admin/resilience/breakerreport/",
    "/admin/rag/cachedanswer/",
    "/admin/rag/cachedanswer/flush/",
    "/admin/rag/document/",
    "/admin/rag/querylog/",
    "/admin/rag/job/",
    "/admin/procrastinate/procrastinatejob/",
    "/admin/resilience/jobsettings/1/change/",
    "/admin/rag/evalrun/",
    "/admin/rag/feedback/",
]


@pytest.mark.parametrize("page", PAGES)
def test_non_staff_users_get_the_login_page(client, django_user_model, page):
    response = client.get(page)
    assert response.status_code == 302 and response.url.startswith("/admin/login/")
    user = django_user_model.objects.create_user("reader", password="unused-password-1")
    client.force_login(user)
    response = client.get(page)
    assert response.status_code == 302 and response.url.startswith("/admin/login/")


@pytest.mark.parametrize("page", PAGES)
def test_staff_users_reach_every_page(admin_client, page):
    assert admin_client.get(page, follow=True).status_code == 200


def test_a_breaker_order_needs_a_post_from_staff(client, admin_client):
    assert client.post("/admin/resilience/breakerreport/command/", {"action": "force_open"}).status_code == 302
    assert admin_client.get("/admin/resilience/breakerreport/command/").status_code == 403
    assert not BreakerCommand.objects.exists()


# BREAKERS


def test_force_open_and_reset_reach_the_query_path(admin_client, client, facilities):
    assert ask(client, "When are boilers serviced?")["generator"] == "ollama"
    orders.sync(now=True)  # reports this process's breakers
    chat = BreakerReport.objects.get(breaker="chat", pid=os.getpid(), host=orders.HOST)
    assert chat.state == "closed"

    response = admin_client.post(
        "/admin/resilience/breakerreport/", {"action": "force_open", "_selected_action": [chat.pk]}, follow=True
    )
    assert "Forced open: chat" in response.content.decode()
    body = ask(client, "Where do staff park?")
    assert body["degraded"] is True and "circuit open" in body["degraded_reason"]
    assert body["generator"] == "extractive"
    orders.sync(now=True)
    chat.refresh_from_db()
    assert (chat.state, chat.forced) == ("open", True)
    assert "forced open in the admin by admin" in chat.transitions[-1]["reason"]

    admin_client.post("/admin/resilience/breakerreport/", {"action": "reset", "_selected_action": [chat.pk]})
    body = ask(client, "Where do visitors park?")
    assert body["degraded"] is False and body["generator"] == "ollama"


def test_the_buttons_order_every_breaker(admin_client, resilience_config):
    response = admin_client.post("/admin/resilience/breakerreport/command/", {"action": "force_open"})
    assert response.status_code == 302
    assert set(BreakerCommand.objects.values_list("breaker", "action")) == {
        ("embed", "force_open"),
        ("chat", "force_open"),
    }
    assert get_breaker("embed").state == "open" and get_breaker("chat").state == "open"
    admin_client.post("/admin/resilience/breakerreport/command/", {"action": "reset"})
    assert get_breaker("embed").state == "closed" and get_breaker("chat").state == "closed"


def test_a_new_process_honours_a_force_open_still_in_effect(resilience_config):
    BreakerCommand.objects.create(breaker="chat", action=BreakerCommand.FORCE_OPEN, requested_by="ops")
    BreakerCommand.objects.create(breaker="embed", action=BreakerCommand.FORCE_OPEN, requested_by="ops")
    BreakerCommand.objects.create(breaker="embed", action=BreakerCommand.RESET, requested_by="ops")
    orders.orders.forget()  # as a process starting now
    orders.sync(now=True)
    assert get_breaker("chat").state == "open"
    assert get_breaker("embed").state == "closed"
    orders.orders.forget()


def test_the_list_shows_each_process_and_marks_silent_ones_stale(admin_client):
    BreakerReport.objects.all().delete()
    now = timezone.now()
    common = {"breaker": "embed", "state": "closed", "host": "web-1"}
    BreakerReport.objects.create(pid=101, last_seen=now, **common)
    BreakerReport.objects.create(
        pid=102,
        last_seen=now - timedelta(minutes=5),
        transitions=[
            {"time": now.timestamp() - 400, "from": "closed", "to": "open", "reason": "5 consecutive failures"}
        ],
        **{**common, "state": "open"},
    )
    page = admin_client.get("/admin/resilience/breakerreport/").content.decode()
    assert "web-1:101" in page and "web-1:102" in page
    assert page.count("(stale: idle or exited)") == 1
    assert "closed → open (5 consecutive failures)" in page


def test_reports_of_long_gone_processes_are_pruned():
    BreakerReport.objects.create(
        host="web-9", pid=9, breaker="chat", state="closed", last_seen=timezone.now() - timedelta(hours=2)
    )
    get_breaker("chat")  # something to report
    orders.orders.forget()  # as a process starting now: it prunes at its first report
    orders.sync(now=True)
    assert not BreakerReport.objects.filter(host="web-9").exists()
    assert BreakerReport.objects.filter(host=orders.HOST, pid=os.getpid(), breaker="chat").exists()


# SEMANTIC CACHE


@pytest.fixture
def cached_answers(db) -> list[CachedAnswer]:
    collection = Collection.objects.get(name="default")
    now = timezone.now()
    vector = np.ones(384, dtype=np.float32) / np.sqrt(384)
    return [
        CachedAnswer.objects.create(
            collection_ids=[collection.pk],
            corpus_versions=[collection.corpus_version],
            embedding_model="local/all-MiniLM-L6-v2",
            generation="extractive",
            prompt_version="1",
            k=5,
            question_hash=f"{i:064d}",
            question=question,
            embedding=vector,
            answer="An answer.",
            generator="extractive",
            created_at=now - timedelta(minutes=10 * i),
        )
        for i, question in enumerate(["What does yield do?", "How do I open a file?"])
    ]


def test_the_cache_list_shows_entries_and_stats(admin_client, cached_answers):
    page = admin_client.get("/admin/rag/cachedanswer/").content.decode()
    assert "What does yield do?" in page and "How do I open a file?" in page
    assert "hit rate" in page and 'id="cache-stats"' in page
    assert "in 59" in page  # expires in 59 minutes (TTL 1 h)
    found = admin_client.get("/admin/rag/cachedanswer/", {"q": "yield"}).content.decode()
    assert "What does yield do?" in found and "How do I open a file?" not in found


def test_delete_selected_removes_only_those(admin_client, cached_answers):
    first = cached_answers[0]
    admin_client.post(
        "/admin/rag/cachedanswer/", {"action": "delete_selected", "_selected_action": [first.pk], "post": "yes"}
    )
    assert list(CachedAnswer.objects.values_list("pk", flat=True)) == [cached_answers[1].pk]


def test_flush_empties_the_cache(admin_client, cached_answers):
    confirm = admin_client.get("/admin/rag/cachedanswer/flush/")
    assert "Delete all 2 cached answers?" in confirm.content.decode()
    assert CachedAnswer.objects.count() == 2  # asking deletes nothing
    response = admin_client.post("/admin/rag/cachedanswer/flush/", follow=True)
    assert "2 answers deleted" in response.content.decode()
    assert not CachedAnswer.objects.exists()


# DOCUMENTS AND QUERIES


def test_collections_and_documents_show_chunk_counts(admin_client, facilities):
    page = admin_client.get("/admin/rag/collection/").content.decode()
    assert "facilities" in page and "ollama/all-minilm" in page
    page = admin_client.get("/admin/rag/document/", {"collection__id__exact": facilities.pk}).content.decode()
    assert "boilers" in page and "parking" in page


def test_delete_goes_through_the_service_and_bumps_the_corpus_version(admin_client, facilities):
    version = facilities.corpus_version
    document = Document.objects.get(collection=facilities, source="boilers.txt")
    admin_client.post(
        "/admin/rag/document/", {"action": "delete_selected", "_selected_action": [document.pk], "post": "yes"}
    )
    assert not Document.objects.filter(pk=document.pk).exists()
    facilities.refresh_from_db()
    assert facilities.corpus_version == version + 1


def test_reingest_queues_the_files_and_skips_the_others(admin_client, facilities, write_files, settings):
    root = write_files({})
    settings.RAGSITE_DOCUMENT_ROOTS = [str(root)]
    boilers = Document.objects.get(collection=facilities, source="boilers.txt")
    assert boilers.file_root == str(root.resolve())
    write_files({"boilers.txt": "Boilers are serviced every March now."})
    pasted = Document.objects.create(
        collection=facilities, source="api:pasted", title="Pasted", sha256="0", media_type="text/plain"
    )
    ids = [boilers.pk, pasted.pk, Document.objects.get(collection=facilities, source="parking.txt").pk]
    response = admin_client.post("/admin/rag/document/", {"action": "reingest", "_selected_action": ids}, follow=True)
    page = response.content.decode()
    assert "Queued 2 document(s) for re-ingestion" in page
    assert "1 document(s) skipped" in page
    queued = Job.objects.get(source=boilers.source)
    assert queued.status == JobStatus.QUEUED and bytes(queued.upload.data) == b"Boilers are serviced every March now."
    assert "October" in boilers.chunks.get().text, "a worker re-ingests it, not the request"


def test_a_document_sent_through_the_api_never_reads_a_server_file(admin_client, key_client, tmp_path, settings):
    secret = tmp_path / "secret.txt"
    secret.write_text("The vault code is 4711.")
    settings.RAGSITE_DOCUMENT_ROOTS = [str(tmp_path)]  # even inside a document root
    body = {"title": "Notes", "text": "Harmless notes.", "collection": "attack", "source": str(secret)}
    created = key_client.post("/api/documents", json.dumps(body), content_type="application/json")
    assert created.status_code == 201
    document = Document.objects.get(pk=created.json()["document"]["id"])
    admin_client.post("/admin/rag/document/", {"action": "reingest", "_selected_action": [document.pk]}, follow=True)
    assert "4711" not in "".join(document.chunks.values_list("text", flat=True))
    answer = key_client.post(
        "/api/query", {"question": "What is the vault code?", "collection": "attack"}, content_type="application/json"
    )
    assert "4711" not in answer.content.decode()


def test_reingest_reads_no_folder_outside_the_document_roots(admin_client, facilities, write_files, settings):
    settings.RAGSITE_DOCUMENT_ROOTS = []
    write_files({"boilers.txt": "Boilers are serviced every March now."})
    boilers = Document.objects.get(collection=facilities, source="boilers.txt")
    response = admin_client.post(
        "/admin/rag/document/", {"action": "reingest", "_selected_action": [boilers.pk]}, follow=True
    )
    assert "its folder is not in RAGSITE_DOCUMENT_ROOTS" in response.content.decode()
    assert "March" not in boilers.chunks.get().text


def test_the_query_log_filters_by_cache_result_and_degradation(admin_client):
    for question, cache, degraded in [
        ("cached q", "exact", False),
        ("fresh q", "miss", False),
        ("sad q", "miss", True),
    ]:
        QueryLog.objects.create(
            question=question, question_hash="0", collection="default", cache=cache, latency_ms=12.0, degraded=degraded
        )
    page = admin_client.get("/admin/rag/querylog/", {"cache": "exact"}).content.decode()
    assert "cached q" in page and "fresh q" not in page
    page = admin_client.get("/admin/rag/querylog/", {"degraded__exact": "1"}).content.decode()
    assert "sad q" in page and "fresh q" not in page


# OVERVIEW


def test_the_overview_draws_the_last_hour_without_scripts_from_elsewhere(admin_client, facilities):
    QueryLog.objects.all().delete()  # only this test's queries (rolled back with it)
    BreakerReport.objects.all().delete()
    now = timezone.now()
    for minutes_ago, latency, cache in [(1, 20.0, "miss"), (1, 40.0, "exact"), (5, 80.0, "miss"), (90, 999.0, "miss")]:
        row = QueryLog.objects.create(
            question="q", question_hash="0", collection="facilities", cache=cache, latency_ms=latency
        )
        QueryLog.objects.filter(pk=row.pk).update(created_at=now - timedelta(minutes=minutes_ago))
    get_breaker("chat").force_open("maintenance")
    orders.sync(now=True)

    index = admin_client.get("/admin/").content.decode()
    assert 'href="/admin/overview/"' in index
    page = admin_client.get("/admin/overview/").content.decode()
    assert "3 queries, 1 from the cache, 0 degraded" in page  # the query 90 minutes ago is out
    assert page.count("<rect ") == 60
    assert "2 queries, 1 cache hits" in page  # the tooltip of the minute with two
    assert "<polyline" in page or "<circle" in page
    assert 'class="state-open">1<' in page  # the chat breaker of this process
    assert "ollama/all-minilm" in page
    assert 'src="http' not in page and "cdn" not in page.lower()


@pytest.mark.parametrize(
    "page",
    [
        "/admin/rag/collection/?visibility__exact=%00",
        "/admin/rag/job/?status__exact=a%00b",
        "/admin/rag/querylog/?created_at__year=99999999999999999999999",
        "/admin/rag/feedback/?created_at__month=x",
    ],
)
def test_a_filter_value_no_column_can_hold_is_a_400_not_a_500(admin_client, page):
    response = admin_client.get(page)
    assert response.status_code == 400
    assert b"NUL" in response.content or b"four digits" in response.content


def test_filters_that_make_sense_still_work(admin_client):
    assert admin_client.get("/admin/rag/querylog/?created_at__year=2026&created_at__month=11").status_code == 200
    assert admin_client.get("/admin/rag/job/?status__exact=failed").status_code == 200
