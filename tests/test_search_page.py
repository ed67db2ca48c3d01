import json
import re
import uuid

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import override_settings

from rag.ingestion import ingest_document

pytestmark = pytest.mark.django_db

QUESTION = "What does the yield statement do?"
# Throttle counts in this process's memory, fresh for each test (see test_access.py).
LOCAL_CACHE = override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}})


def api_ask(client, **extra):
    body = json.dumps({"question": QUESTION, "k": 50})
    return client.post("/api/query", body, content_type="application/json", **extra)


def test_empty_page_shows_the_search_box(client, db):
    response = client.get("/")
    assert response.status_code == 200
    assert b'name="q"' in response.content


def test_search_shows_answer_and_numbered_sources(client, demo_corpus):
    response = client.get("/", {"q": QUESTION})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="answer-text"' in html and "[1]" in html
    assert "[1] The &quot;yield&quot; statement" in html
    assert "pydoc:yield" in html
    assert "cache: " in html


def test_a_passage_two_documents_hold_is_shown_once_naming_both(client, demo_corpus):
    html = client.get("/", {"q": "How does the with statement work?"}).content.decode()
    snippets = re.findall(r'<p class="snippet">(.*?)</p>', html, re.S)
    assert len(snippets) == 5 and len(set(snippets)) == 5
    # Each snippet shows its sentence closest to the question, marked.
    assert all("<mark>" in snippet for snippet in snippets)
    assert "with" in re.search(r"<mark>(.*?)</mark>", snippets[0], re.S).group(1).lower()
    assert re.search(r"Also in: .*?\(<bdi>pydoc:(with|compound)</bdi>\)", html)


def test_document_text_is_escaped(client, db):
    ingest_document(
        collection_name="default",
        source="api:evil",
        title="<script>alert('t')</script> Evil title",
        data=b"Malicious payload <script>alert('x')</script> inside a paragraph about volcanoes erupting.",
        media_type="text/plain",
    )
    html = client.get("/", {"q": "volcanoes erupting"}).content.decode()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html


def test_unknown_collection_shows_an_error(client, db):
    response = client.get("/", {"q": "hello?", "collection": "missing"})
    assert response.status_code == 404
    assert "No collection named" in response.content.decode()


def test_too_long_question_shows_a_form_error(client, db):
    response = client.get("/", {"q": "x" * 2001})
    assert response.status_code == 400
    assert "at most 2000 characters" in response.content.decode()


def test_k_is_capped_as_in_the_api(client, demo_corpus):
    too_many = settings.RAGSITE_MAX_K + 1
    response = client.get("/", {"q": QUESTION, "k": too_many})
    assert response.status_code == 400
    html = response.content.decode()
    assert f"less than or equal to {settings.RAGSITE_MAX_K}" in html and 'id="answer-text"' not in html
    body = json.dumps({"question": QUESTION, "k": too_many})
    assert client.post("/api/query", body, content_type="application/json").status_code == 400
    response = client.get("/", {"q": QUESTION, "k": settings.RAGSITE_MAX_K})
    assert response.status_code == 200 and 'id="answer-text"' in response.content.decode()


# ACCESS: the page obeys the API's rules and throttles


def test_key_only_mode_asks_visitors_to_sign_in_instead_of_answering(client, demo_corpus, resilience_config):
    resilience_config(access={"queries_require_key": True})
    assert api_ask(client).status_code == 401
    response = client.get("/", {"q": QUESTION, "k": 50})
    assert response.status_code == 401
    html = response.content.decode()
    assert 'id="answer-text"' not in html and "pydoc:yield" not in html
    assert "signed-in staff only: please sign in" in html
    assert 'href="/accounts/login/?next=/%3Fq%3DWhat' in html
    # A signed-in user who is not staff may not ask either (as in the API).
    client.force_login(User.objects.create_user("visitor", password="x"))
    response = client.get("/", {"q": QUESTION})
    assert response.status_code == 403 and 'id="answer-text"' not in response.content.decode()
    assert "your account is not a staff account" in response.content.decode()
    assert "please sign in" not in response.content.decode(), "already signed in"


def test_key_only_mode_answers_signed_in_staff(client, demo_corpus, resilience_config):
    resilience_config(access={"queries_require_key": True})
    client.force_login(User.objects.create_user("ops", password="x", is_staff=True))
    response = client.get("/", {"q": QUESTION})
    assert response.status_code == 200
    assert 'id="answer-text"' in response.content.decode() and "pydoc:yield" in response.content.decode()


@LOCAL_CACHE
def test_page_questions_are_throttled_per_address(client, demo_corpus, resilience_config):
    resilience_config(access={"ip_rate": "5/minute"})
    for _ in range(3):  # showing the empty page spends nothing
        assert client.get("/", REMOTE_ADDR="10.2.2.2").status_code == 200
    statuses = [client.get("/", {"q": QUESTION, "k": 50}, REMOTE_ADDR="10.2.2.2").status_code for _ in range(6)]
    assert statuses == [200, 200, 200, 200, 200, 429]
    refused = client.get("/", {"q": QUESTION}, REMOTE_ADDR="10.2.2.2")
    assert refused.status_code == 429 and 0 < int(refused["Retry-After"]) <= 60
    html = refused.content.decode()
    assert "Too many questions from your address" in html and 'id="answer-text"' not in html
    assert client.get("/", {"q": QUESTION}, REMOTE_ADDR="10.2.2.3").status_code == 200


@LOCAL_CACHE
def test_page_and_api_share_one_budget(client, demo_corpus, resilience_config):
    resilience_config(access={"ip_rate": "5/minute"})
    address = {"REMOTE_ADDR": "10.3.3.3"}
    assert [client.get("/", {"q": QUESTION}, **address).status_code for _ in range(3)] == [200, 200, 200]
    assert [api_ask(client, **address).status_code for _ in range(2)] == [200, 200]
    assert client.get("/", {"q": QUESTION}, **address).status_code == 429
    assert api_ask(client, **address).status_code == 429


@pytest.mark.parametrize("params", [{"utm_source": "newsletter"}, {"collection": "hr"}])
def test_a_link_without_a_question_opens_the_empty_page(client, demo_corpus, params):
    from rag.models import Collection

    Collection.objects.create(name="hr")  # two collections: the page offers the choice
    response = client.get("/", params)
    assert response.status_code == 200
    assert b"This field is required" not in response.content
    assert (b'value="hr" checked' in response.content) == ("collection" in params)  # the link's pick is kept


# FORM ERRORS


def test_a_form_error_names_the_field_it_is_about(client, db):
    response = client.get("/", {"q": "hello", "k": 0})
    assert response.status_code == 400
    html = response.content.decode()
    assert "<p>k: Ensure this value is greater than or equal to 1.</p>" in html
    # The question's own errors need no name: they are under its box.
    assert "<p>This field is required.</p>" in client.get("/", {"q": ""}).content.decode()


@pytest.mark.parametrize("invisible", ["\u202e\u200b", "\u200e \u2060\ufeff\u200f", " \u2066\u2069\t"])
def test_a_question_of_invisible_characters_is_no_question(client, demo_corpus, invisible):
    response = client.get("/", {"q": invisible})
    assert response.status_code == 400
    html = response.content.decode()
    assert "This field is required." in html and 'id="answer-text"' not in html
    # Visible words among them are still a question.
    assert client.get("/", {"q": f"\u200b{QUESTION}"}).status_code == 200


# ANSWERS


def test_an_answer_citing_a_passage_that_does_not_exist_says_so(client, demo_corpus, fake_ollama, resilience_config):
    resilience_config(provider={"ollama_base_url": fake_ollama.url, "generation_backend": "ollama"})
    question = f"What does the yield statement do in {uuid.uuid4().hex[:8]}?"
    fake_ollama.chat_reply = "It suspends the generator [1], as the tutorial says [7]."
    html = client.get("/", {"q": question}).content.decode()
    assert 'data-flag="generator">ollama<' in html
    assert (
        '<p class="warning" id="invalid-citations">The answer cites [7], which is not one of the sources.</p>' in html
    )
    fake_ollama.chat_reply = "It suspends the generator [1] [9], as the tutorial says [7] [8]."
    html = client.get("/", {"q": question + " again"}).content.decode()
    assert "The answer cites [7], [8] and [9], which are not among the sources." in html
    fake_ollama.chat_reply = "It suspends the generator [1]."
    assert 'id="invalid-citations"' not in client.get("/", {"q": question + " once more"}).content.decode()
