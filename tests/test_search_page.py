import pytest

from rag.ingestion import ingest_document

pytestmark = pytest.mark.django_db


def test_empty_page_shows_the_search_box(client, db):
    response = client.get("/")
    assert response.status_code == 200
    assert b'name="q"' in response.content


def test_search_shows_answer_and_numbered_sources(client, demo_corpus):
    response = client.get("/", {"q": "What does the yield statement do?"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="answer-text"' in html and "[1]" in html
    assert "[1] The &quot;yield&quot; statement" in html
    assert "pydoc:yield" in html
    assert "cache: " in html


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
