"""Feedback: thumbs up and down on answers, who may evict a cached answer, and the export."""

from __future__ import annotations

import json
from io import StringIO
from urllib.parse import quote_plus

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import override_settings

from rag.ingestion import ingest_items
from rag.models import ApiKey, CachedAnswer, Collection, Feedback
from rag.sources import SourceItem

pytestmark = pytest.mark.django_db

COLLECTION = "feedback-test"
QUESTION = "When are the boilers serviced?"


@pytest.fixture
def corpus(resilience_config):
    text = b"Boilers\n\nThe boiler room is in the basement. Boilers are serviced every October by the caretaker."
    assert not ingest_items(
        [SourceItem("facility:boilers", text, "text/plain", "boilers")], collection_name=COLLECTION
    ).failures


def ask(client, **headers) -> dict:
    response = client.post(
        "/api/query", {"question": QUESTION, "collection": COLLECTION}, content_type="application/json", **headers
    )
    assert response.status_code == 200, response.content
    return response.json()


def rate(client, query_id, rating: str, **headers):
    body = {"query_id": query_id, "rating": rating, "comment": "  wrong month  "}
    return client.post("/api/feedback", body, content_type="application/json", **headers)


def cached() -> int:
    return CachedAnswer.objects.filter(collection_ids=[Collection.objects.get(name=COLLECTION).pk]).count()


def test_every_answer_carries_a_query_id_and_feedback_is_stored_with_it(client, corpus):
    answer = ask(client)
    assert isinstance(answer["query_id"], int)
    response = rate(client, answer["query_id"], "up")
    assert response.status_code == 201
    assert response.json() == {
        "id": response.json()["id"],
        "query_id": answer["query_id"],
        "rating": "up",
        "evicted": 0,
    }
    stored = Feedback.objects.get()
    assert stored.query.question == QUESTION and stored.comment == "wrong month" and stored.user is None


def test_an_anonymous_thumbs_down_is_recorded_but_never_evicts(client, corpus):
    answer = ask(client)
    assert cached() == 1
    assert rate(client, answer["query_id"], "down").json()["evicted"] == 0
    assert cached() == 1
    assert ask(client)["cache"] == "exact"


def test_a_key_holders_thumbs_down_evicts_the_cached_answer(client, corpus):
    _, key = ApiKey.issue(name="app")
    answer = ask(client)
    hit = ask(client)
    assert hit["cache"] == "exact"
    response = rate(client, hit["query_id"], "down", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.json()["evicted"] == 1
    assert cached() == 0
    assert ask(client)["cache"] == "miss"
    assert Feedback.objects.get().api_key is not None and answer["query_id"] != hit["query_id"]


def page_query_id(html: str) -> int:
    return int(html.split('name="query_id" value="')[1].split('"')[0])


def test_a_signed_in_users_thumbs_down_on_the_search_page_evicts_without_javascript(client, corpus):
    client.force_login(User.objects.create_user("reader", password="unused-password-1"))
    page = client.get("/", {"q": QUESTION, "collection": COLLECTION}).content.decode()
    assert 'action="/feedback"' in page and 'name="rating" value="down"' in page
    response = client.post("/feedback", {"query_id": page_query_id(page), "rating": "down"})
    # Post/Redirect/Get: back to the same question, which is asked afresh (its cached answer is gone).
    assert response.status_code == 303
    assert response["Location"] == f"/?q={quote_plus(QUESTION)}&collection={COLLECTION}&feedback=evicted"
    assert cached() == 0
    assert Feedback.objects.get().user.username == "reader"
    page = client.get(response["Location"])
    assert page.status_code == 200
    html = page.content.decode()
    assert "Thank you for your feedback: the cached answer was removed" in html
    assert 'data-flag="cache">cache: miss<' in html and "Boilers are serviced every October" in html
    assert 'name="rating" value="down"' in html  # the fresh answer can be rated in turn


def test_a_vote_on_the_search_page_leads_back_to_the_question_and_reloading_does_not_vote_again(client, corpus):
    page = client.get("/", {"q": QUESTION, "collection": COLLECTION, "k": 3}).content.decode()
    assert '<input type="hidden" name="k" value="3">' in page
    response = client.post("/feedback", {"query_id": page_query_id(page), "rating": "up", "k": 3}, follow=True)
    assert response.redirect_chain == [(f"/?q={quote_plus(QUESTION)}&collection={COLLECTION}&k=3&feedback=thanks", 303)]
    html = response.content.decode()
    assert 'id="feedback-thanks">Thank you for your feedback.</p>' in html
    assert f'value="{QUESTION}"' in html and "Boilers are serviced every October" in html
    assert 'id="source-1"' in html and 'id="source-4"' not in html  # k=3 kept
    client.get(response.redirect_chain[0][0])  # reloading the page asks again, it does not vote
    assert Feedback.objects.count() == 1
    # Voting again is recorded again, on purpose (README: Feedback).
    client.post("/feedback", {"query_id": page_query_id(html), "rating": "up"})
    assert Feedback.objects.count() == 2
    assert "Thank you" not in client.get("/", {"q": QUESTION, "collection": COLLECTION}).content.decode()


def test_bad_feedback_is_a_clear_4xx(client, corpus):
    answer = ask(client)
    response = rate(client, answer["query_id"], "sideways")
    assert response.status_code == 400 and "rating" in response.json()["error"]["fields"]
    response = rate(client, 99999999, "up")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert client.post("/feedback", {"query_id": "x", "rating": "up"}).status_code == 400
    assert client.post("/feedback", {"query_id": 99999999, "rating": "up"}).status_code == 404
    assert not Feedback.objects.exists()


@override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}})
def test_feedback_is_throttled_like_queries(client, corpus, resilience_config):
    answer = ask(client)
    resilience_config(access={"ip_rate": "2/minute"})
    statuses = [rate(client, answer["query_id"], "up", REMOTE_ADDR="10.2.2.2").status_code for _ in range(3)]
    assert statuses == [201, 201, 429]
    assert (
        client.post("/feedback", {"query_id": answer["query_id"], "rating": "up"}, REMOTE_ADDR="10.2.2.2").status_code
        == 429
    )


def test_judged_thumbs_down_questions_export_as_golden_lines(client, corpus, tmp_path):
    first = ask(client)["query_id"]
    client.post(
        "/api/query", {"question": "Is parking free?", "collection": COLLECTION}, content_type="application/json"
    )
    rate(client, first, "down")
    rate(client, first, "down")  # twice: one line
    other = Feedback.objects.create(query_id=first + 1, rating="down")
    Feedback.objects.filter(query_id=first).update(expected_source="facility:boilers")
    path = tmp_path / "feedback.jsonl"
    out = StringIO()
    call_command("evaluate", "--export-feedback", str(path), stdout=out)
    assert "Wrote 1 golden-set line(s)" in out.getvalue() and "1 thumbs-down question(s) left out" in out.getvalue()
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"question": QUESTION, "expected": ["facility:boilers"], "kind": "feedback"}
    ]
    other.not_answerable = True
    other.save()
    call_command("evaluate", "--export-feedback", str(path), "--force", stdout=StringIO())  # replaces the first
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert {"question": "Is parking free?", "expected": [], "kind": "feedback", "answerable": False} in lines


def test_operators_judge_feedback_in_the_admin_and_contradictions_are_refused(admin_client, client, corpus):
    rate(client, ask(client)["query_id"], "down")
    feedback = Feedback.objects.get()
    page = admin_client.get("/admin/rag/feedback/", {"rating__exact": "down"}).content.decode()
    assert QUESTION in page and "anonymous" in page
    url = f"/admin/rag/feedback/{feedback.pk}/change/"
    response = admin_client.post(url, {"expected_source": "facility:boilers", "not_answerable": "on"})
    assert response.status_code == 200 and "Either name the expected source" in response.content.decode()
    admin_client.post(url, {"expected_source": "facility:boilers"})
    feedback.refresh_from_db()
    assert feedback.expected_source == "facility:boilers"
