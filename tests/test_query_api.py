import json
import re

import pytest

pytestmark = pytest.mark.django_db


def post(client, body, content_type="application/json"):
    data = json.dumps(body) if content_type == "application/json" and not isinstance(body, str | bytes) else body
    return client.post("/api/query", data=data, content_type=content_type)


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


def test_query_answers_with_numbered_sources(client, demo_corpus):
    response = post(client, {"question": "What does the yield statement do?"})
    assert response.status_code == 200
    body = response.json()
    assert body["question"] == "What does the yield statement do?"
    assert body["sources"][0]["source"] == "pydoc:yield"
    assert len(body["sources"]) == 5
    fields = {
        "id",
        "document_id",
        "title",
        "source",
        "score",
        "text",
        "chunk_ids",
        "heading",
        "collection",
        "also_in",
        "highlight",
    }
    assert set(body["sources"][0]) == fields
    assert body["sources"][0]["collection"] == "default" and body["collections"] == ["default"]
    assert "[1]" in body["answer"] and "yield" in body["answer"].lower()
    assert body["cache"] in ("miss", "exact", "semantic")
    assert body["degraded"] is False and body["degraded_reason"] is None
    assert body["timings_ms"]["total"] > 0


def test_query_alias_and_k(client, demo_corpus):
    body = post(client, {"query": "What is a lambda expression?", "k": 2}).json()
    assert len(body["sources"]) == 2
    # The lambda topic, or the function definitions section that also defines lambda forms.
    assert "pydoc:lambda" in [source["source"] for source in body["sources"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "question"),
        ({"question": "   "}, "question"),
        ({"question": "\u202e\u200b \u200f"}, "question"),  # nothing visible: direction marks, zero-width space
        ({"question": "x" * 2001}, "question"),
        ({"question": "ok?", "k": 0}, "k"),
        ({"question": "ok?", "k": 51}, "k"),
        ({"question": "ok?", "k": "many"}, "k"),
        ({"question": ["a", "list"]}, "question"),
        ({"question": "ok?", "collection": "../etc"}, "collection"),
        ({"question": "nul \x00 byte"}, "question"),
    ],
)
def test_invalid_queries_get_field_errors(client, body, field):
    error = assert_error(post(client, body), 400, "invalid")
    assert field in error["fields"]


def test_unknown_collection_is_404(client, db):
    assert_error(post(client, {"question": "anything?", "collection": "nope"}), 404, "not_found")


def test_malformed_json_is_400(client):
    assert_error(post(client, '{"question": ', content_type="application/json"), 400, "malformed_request")


def test_json_that_is_not_an_object_is_400(client):
    assert_error(post(client, "[1, 2, 3]"), 400, "invalid")


def test_wrong_content_type_is_415(client):
    assert_error(post(client, "question=hi", content_type="text/plain"), 415, "unsupported_media_type")


def test_wrong_method_is_405(client):
    assert_error(client.get("/api/query"), 405, "method_not_allowed")


def test_unknown_api_path_is_json_404(client):
    assert_error(client.get("/api/nothing-here"), 404, "not_found")


def test_health_reports_the_database(client, db):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok" and response.json()["database"] is True


def test_schema_and_docs_are_served_without_a_cdn(client, db):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/query" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.content.decode())
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    assert all(a.startswith("/static/") for a in assets), assets


def test_a_cached_answer_keeps_the_documents_its_passages_are_also_in(client, demo_corpus):
    body = {"question": "How does the with statement work?", "k": 5}
    first = client.post("/api/query", body, content_type="application/json").json()
    again = client.post("/api/query", body, content_type="application/json").json()
    assert (first["cache"], again["cache"]) == ("miss", "exact")
    assert any(s["also_in"] for s in first["sources"])
    assert [s["also_in"] for s in again["sources"]] == [s["also_in"] for s in first["sources"]]
    assert [s["highlight"] for s in again["sources"]] == [s["highlight"] for s in first["sources"]]


def test_each_source_marks_its_sentence_closest_to_the_question(client, demo_corpus):
    body = {"question": "What does the global statement do?", "use_cache": False}
    sources = client.post("/api/query", body, content_type="application/json").json()["sources"]
    assert sources[0]["source"] == "pydoc:global"
    start, end = sources[0]["highlight"]
    sentence = sources[0]["text"][start:end]
    assert "global" in sentence and sentence.rstrip().endswith((".", ")", '"'))
    assert all(s["highlight"] is None or 0 <= s["highlight"][0] < s["highlight"][1] <= len(s["text"]) for s in sources)
