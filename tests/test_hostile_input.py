"""Nasty input gets a clear 4xx JSON error, never a 500."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.django_db


def assert_4xx(response, status=None):
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    if status is not None:
        assert response.status_code == status
    assert response.json()["error"]["message"]
    return response.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"null",
        b"42",
        b'"just a string"',
        b"[" * 5000 + b"]" * 5000,  # deeply nested JSON
        b'{"question": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        b'{"question": "\xff\xfe invalid utf-8"}',
        b'{"question": "nul \\u0000 byte"}',
        b'{"question": {"$gt": ""}}',
        b'{"question": true}',
        b'{"question": "ok?", "k": 1e309}',
        b'{"question": "ok?", "k": "5; DROP TABLE rag_chunk"}',
        b'{"question": "ok?", "k": [1]}',
        b'{"question": "ok?", "collection": {"a": 1}}',
        b'{"question": "ok?", "stream": "sometimes"}',
        b'{"question": "ok?", "use_cache": 7}',
    ],
)
def test_malformed_query_bodies_are_4xx(client, body):
    assert_4xx(client.post("/api/query", body, content_type="application/json"), 400)


def test_a_huge_body_is_refused(client, settings):
    body = json.dumps({"question": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)})
    error = assert_4xx(client.post("/api/query", body, content_type="application/json"))
    assert error["code"] in ("too_large", "invalid")


@pytest.mark.parametrize(
    "question",
    [
        "'; DROP TABLE rag_chunk; --",
        "<script>alert(1)</script>",
        '" OR 1=1 --',
        "%s %s %s",
        "{{ settings.SECRET_KEY }}",
        "!!! ??? ...",
        "&|!<->():*",
        "-yield -statement",
    ],
)
def test_sql_html_and_operator_fragments_are_just_questions(client, demo_corpus, question):
    response = client.post("/api/query", json.dumps({"question": question}), content_type="application/json")
    assert response.status_code == 200
    body = response.json()
    assert body["question"] == question
    assert "SECRET" not in body["answer"] or "SECRET_KEY" in question


def test_search_page_with_hostile_parameters(client, db):
    for params in ({"q": "<script>alert(1)</script>"}, {"q": "x", "k": "-5"}, {"q": "x", "collection": "'; --"}):
        response = client.get("/", params)
        assert response.status_code in (200, 400, 404)
        assert b"<script>alert(1)</script>" not in response.content


def test_document_ids_that_are_not_numbers_are_404(client):
    for path in ("/api/documents/abc", "/api/documents/-1", "/api/documents/99999999999999999999999"):
        response = client.get(path)
        assert response.status_code == 404


def test_wrong_types_in_document_post_are_4xx(key_client):
    for body in (
        {"title": ["x"], "text": "t"},
        {"title": "t", "text": {"a": 1}},
        {"title": "t", "text": "x", "collection": "a b"},
    ):
        assert_4xx(key_client.post("/api/documents", json.dumps(body), content_type="application/json"), 400)


def test_upload_of_an_unsupported_type_is_refused(key_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = key_client.post("/api/documents", {"file": SimpleUploadedFile("payload.exe", b"MZ\x90\x00")})
    assert "Unsupported file type" in str(assert_4xx(response, 400)["fields"])


def test_too_large_upload_is_refused(key_client, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.RAGSITE_MAX_UPLOAD_BYTES = 1024
    response = key_client.post("/api/documents", {"file": SimpleUploadedFile("big.txt", b"word " * 1000)})
    assert "too large" in str(assert_4xx(response, 400)["fields"])


@pytest.mark.parametrize("path", ["/api/query", "/health/live", "/"])
def test_a_content_length_that_is_not_a_number_is_400_json(client, path):
    response = client.post(path, b'{"question": "yield?"}', content_type="application/json", CONTENT_LENGTH="abc")
    assert assert_4xx(response, 400)["code"] == "malformed_request"


def test_a_malformed_request_to_the_api_is_a_json_400(client):
    too_many = {f"a{n}": "1" for n in range(1100)}  # over DATA_UPLOAD_MAX_NUMBER_FIELDS
    assert assert_4xx(client.get("/api/documents", too_many), 400)["code"] == "bad_request"
    # Refused before any view: Django's own 400, in the API's shape.
    response = client.get("/api/documents", HTTP_HOST="bad host!")
    assert assert_4xx(response, 400)["code"] == "bad_request" and response["Content-Type"] == "application/json"


def test_a_format_parameter_does_not_change_the_answer(client, demo_corpus):
    response = client.post("/api/query?format=xml", {"question": "yield?"}, content_type="application/json")
    assert response.status_code == 200 and response.json()["sources"]
    assert client.get("/api/documents?format=xml").json()["count"] > 0


def test_the_collection_limit_counts_names_as_sent(client):
    body = {"question": "x", "collections": ["default"] * 51}
    error = assert_4xx(client.post("/api/query", body, content_type="application/json"), 400)
    assert "collections" in error["fields"]
