"""The hot path: a cached answer in one round trip (exact) or two (semantic), its bookkeeping written
in batches off the request, keys looked up once a second, and the health check that costs no round
trip. Real requests through the test client, on committed data and in autocommit, as a server
runs them; statements counted with Django's CaptureQueriesContext."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from rag import access, bookkeeping, throttling
from rag.answers import answer_question
from rag.collections import delete_collection
from rag.feedback import give_feedback
from rag.ingestion import ingest_items
from rag.models import ApiKey, CachedAnswerUsage, CachedEmbedding, Collection, QueryLog, ThrottleCount
from rag.query_log import NEXT_ID_SQL
from rag.results import Answer
from rag.serializers import QueryOutSerializer, query_out
from rag.sources import SourceItem
from rag.visibility import OPERATOR
from ragsite import liveserver
from resilience import orders
from tests import live

# Asked only here: the vectors of committed questions stay in the embedding cache while this
# module runs, and other modules' tests expect their own questions not embedded yet.
QUESTION = "What does yield do in a generator function?"
PARAPHRASE = "What does yield do in a generator function exactly?"  # similarity 0.99 with the local model
TEXT = (
    "A yield statement is semantically equivalent to a yield expression. Using yield in a function body makes "
    "it a generator function: calling it returns a generator iterator."
)


@pytest.fixture(scope="module")
def committed(django_db_setup, django_db_blocker):
    """A committed collection (requests here run in autocommit, as under a server) and cleaning up
    what the questions leave: cached answers go with the collection, the rest by name or id."""
    name = f"hot-path-{os.getpid()}"
    with django_db_blocker.unblock():
        last_embedding = CachedEmbedding.objects.order_by("-id").values_list("id", flat=True).first() or 0
        item = SourceItem("test:yield", f"The yield statement\n\n{TEXT}".encode(), "text/plain", "yield")
        assert not ingest_items([item], collection_name=name).failures
        # Other modules' tests run while this fixture lives (pytest-django runs them first): no
        # committed vectors of ours may sit in the embedding cache meanwhile.
        CachedEmbedding.objects.filter(id__gt=last_embedding).delete()
    yield name
    with django_db_blocker.unblock():
        bookkeeping.ledger.flush()
        delete_collection(collection=Collection.objects.get(name=name))
        QueryLog.objects.filter(collection=name).delete()
        CachedEmbedding.objects.filter(id__gt=last_embedding).delete()
        ThrottleCount.objects.filter(key__startswith="throttle_").delete()
        connections.close_all()


@pytest.fixture
def autocommit(committed, django_db_blocker, resilience_config):
    with django_db_blocker.unblock():
        last_embedding = CachedEmbedding.objects.order_by("-id").values_list("id", flat=True).first() or 0
        yield committed
        CachedEmbedding.objects.filter(id__gt=last_embedding).delete()


@pytest.fixture
def keyed(autocommit):
    row, key = ApiKey.issue(name="hot path")
    yield Client(HTTP_AUTHORIZATION=f"Bearer {key}"), f"throttle_key_{row.pk}"
    row.delete()


def ask(client: Client, question: str, collection: str, **extra):
    body = {"question": question, "collection": collection, **extra}
    return client.post("/api/query", json.dumps(body), content_type="application/json")


def freeze_once_a_second_checks(monkeypatch) -> None:
    """Breaker orders and key lookups run at most once a second per process, and one request in
    PRUNE_ONE_IN also deletes expired throttle counts: none of them in the request counted (the
    settings come from the test's override: none at all)."""
    now = time.monotonic()
    monkeypatch.setattr(orders.orders, "timer", lambda: now)
    monkeypatch.setattr(access.keys, "timer", lambda: now)
    monkeypatch.setattr(throttling, "PRUNE_ONE_IN", 10**18)


def statements(client: Client, question: str, collection: str) -> tuple[dict, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = ask(client, question, collection)
    assert response.status_code == 200, response.content
    return response.json(), [q["sql"] for q in captured.captured_queries]


@pytest.mark.parametrize("with_key", [True, False], ids=["api key", "anonymous"])
def test_an_exact_hit_is_one_round_trip_throttle_included(autocommit, keyed, with_key, monkeypatch):
    client, budget = keyed if with_key else (Client(REMOTE_ADDR="10.7.7.7"), "throttle_ip_10.7.7.7")
    assert ask(client, QUESTION, autocommit).json()["cache"] in ("miss", "exact")
    assert ask(client, QUESTION, autocommit).json()["cache"] == "exact"
    freeze_once_a_second_checks(monkeypatch)
    throttle = ThrottleCount.objects.get(key=budget)
    body, sql = statements(client, QUESTION.upper(), autocommit)
    assert body["cache"] == "exact" and body["sources"][0]["source"] == "test:yield"
    assert len(sql) == 1, sql
    # That one statement counted the request against the caller's budget...
    throttle_after = ThrottleCount.objects.get(pk=throttle.pk)
    assert throttle_after.count == throttle.count + 1 or throttle_after.window_index > throttle.window_index
    # ...and the answer's bookkeeping follows in the next batch: its log row has the id it was given.
    bookkeeping.ledger.flush()
    logged = QueryLog.objects.get(pk=body["query_id"])
    assert (logged.cache, logged.question, logged.collection) == ("exact", QUESTION.upper(), autocommit)


def test_a_semantic_hit_of_a_question_embedded_before_is_two_round_trips(autocommit, keyed, monkeypatch):
    client, _ = keyed
    ask(client, QUESTION, autocommit)
    assert ask(client, PARAPHRASE, autocommit).json()["cache"] == "semantic"  # now embedded and cached
    freeze_once_a_second_checks(monkeypatch)
    body, sql = statements(client, PARAPHRASE, autocommit)
    assert body["cache"] == "semantic" and body["matched_question"] == QUESTION
    assert len(sql) == 2, sql
    bookkeeping.ledger.flush()
    usage = CachedAnswerUsage.objects.get(entry__question=QUESTION, entry__collection_ids=[collection_id(autocommit)])
    assert usage.hits >= 2  # the two semantic hits at least, counted in batches


def collection_id(name: str) -> int:
    return Collection.objects.get(name=name).pk


def test_a_key_revoked_elsewhere_stops_working_within_the_second(autocommit, monkeypatch):
    row, key = ApiKey.issue(name="revoked elsewhere")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    now = [1000.0]
    monkeypatch.setattr(access.keys, "timer", lambda: now[0])
    assert ask(client, QUESTION, autocommit).status_code == 200
    # Another process revokes it: no signal reaches this one.
    ApiKey.objects.filter(pk=row.pk).update(revoked_at=timezone.now())
    now[0] += 0.5
    assert ask(client, QUESTION, autocommit).status_code == 200  # this process still knows it as it was
    now[0] += 0.6
    assert ask(client, QUESTION, autocommit).status_code == 401
    row.delete()


def test_a_key_revoked_in_this_process_stops_working_at_once(autocommit, monkeypatch):
    row, key = ApiKey.issue(name="revoked here")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    monkeypatch.setattr(access.keys, "timer", lambda: 1000.0)
    assert ask(client, QUESTION, autocommit).status_code == 200
    row.revoke()
    assert ask(client, QUESTION, autocommit).status_code == 401
    row.delete()


def test_feedback_waits_for_a_log_row_another_process_has_not_written_yet(autocommit):
    answer = answer_question(question=QUESTION, caller=OPERATOR, collection_name=autocommit)
    other = bookkeeping.Ledger()  # another process's, about to flush
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {NEXT_ID_SQL}")
        query_id = cursor.fetchone()[0]
    other._add(logs=[bookkeeping.LogRow(query_id, QUESTION, "x", autocommit, [collection_id(autocommit)], "exact",
                                        1.0, False, "", True, timezone.now())])  # fmt: skip

    def flush_later() -> None:
        time.sleep(0.3)
        try:
            other.flush()
        finally:
            connections.close_all()

    writer = threading.Thread(target=flush_later)
    writer.start()
    feedback = give_feedback(caller=OPERATOR, query_id=query_id, rating="up")
    writer.join()
    assert feedback.query_id == query_id and answer.query_id != query_id
    feedback.delete()


def test_a_process_that_stops_writes_what_it_had_not_written_yet(committed, django_db_blocker):
    script = (
        "import django, sys; django.setup()\n"
        "from rag.answers import answer_question\n"
        "from rag.visibility import OPERATOR\n"
        "a = answer_question(question=sys.argv[1], caller=OPERATOR, collection_name=sys.argv[2])\n"
        "print(a.query_id)\n"
    )
    with django_db_blocker.unblock():
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "ragsite.settings", "DATABASE_URL": live.test_database_url()}
        question = f"{QUESTION} (asked by a process that exits at once)"
        done = subprocess.run(
            [sys.executable, "-c", script, question, committed],
            cwd=liveserver.ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        query_id = int(done.stdout.strip().splitlines()[-1])
        assert QueryLog.objects.get(pk=query_id).question == question  # written at exit, not lost


def test_a_terminated_database_connection_is_noticed_without_a_query(autocommit):
    connection.ensure_connection()
    assert connection.is_usable()
    other = connections.create_connection("default")
    with other.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])
    other.close()
    time.sleep(0.2)
    assert not connection.is_usable()
    connection.close()
    assert ask(Client(), QUESTION, autocommit).status_code == 200  # and the next request reconnects


@pytest.mark.django_db
def test_the_fast_answer_body_is_what_the_serializer_gives(committed, resilience_config):
    answers = [
        answer_question(question=QUESTION, caller=OPERATOR, collection_name=committed, use_cache=False),
        answer_question(question=QUESTION, caller=OPERATOR, collection_name=committed),
        answer_question(question=QUESTION, caller=OPERATOR, collection_name=committed),
        answer_question(question=PARAPHRASE, caller=OPERATOR, collection_name=committed),
        answer_question(question="How do I bake bread?", caller=OPERATOR, collection_name=committed),
        Answer(question="q", answer="a", sources=[], collection="c", degraded=True, degraded_reason="down"),
    ]
    assert {a.cache for a in answers[:4]} >= {"bypass", "exact", "semantic"}
    for answer in answers:
        assert query_out(answer) == QueryOutSerializer(answer).data
