import pytest

from rag.models import Chunk, Collection, Document

pytestmark = pytest.mark.django_db


def test_post_text_document_then_read_list_and_delete(key_client):
    client = key_client
    response = client.post(
        "/api/documents",
        {"title": "Office hours", "text": "The office is open from nine to five on weekdays.", "collection": "hr"},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "new" and body["chunks"] == 1
    doc_id = body["document"]["id"]
    assert body["document"]["collection"] == "hr" and body["document"]["chunk_count"] == 1

    listing = client.get("/api/documents", {"collection": "hr"}).json()
    assert listing["count"] == 1 and listing["results"][0]["title"] == "Office hours"
    assert client.get(f"/api/documents/{doc_id}").json()["chunk_count"] == 1

    answer = client.post(
        "/api/query", {"question": "When is the office open?", "collection": "hr"}, content_type="application/json"
    ).json()
    assert answer["sources"][0]["document_id"] == doc_id

    version = Collection.objects.get(name="hr").corpus_version
    assert client.delete(f"/api/documents/{doc_id}").status_code == 204
    assert not Document.objects.filter(pk=doc_id).exists()
    assert not Chunk.objects.filter(document_id=doc_id).exists()
    assert Collection.objects.get(name="hr").corpus_version > version
    assert client.get(f"/api/documents/{doc_id}").status_code == 404


def test_reposting_the_same_text_is_unchanged(key_client):
    client = key_client
    payload = {"title": "Note", "text": "Bring your badge to the lab.", "collection": "notes"}
    assert client.post("/api/documents", payload, content_type="application/json").status_code == 201
    again = client.post("/api/documents", payload, content_type="application/json")
    assert again.status_code == 200 and again.json()["status"] == "unchanged"
    assert Document.objects.filter(collection__name="notes").count() == 1


def test_upload_a_file_queues_a_job(key_client, make_pdf):
    client = key_client
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("minutes.pdf", make_pdf("The board approved the budget."), "application/pdf")
    response = client.post("/api/documents", {"file": upload, "collection": "board"})
    assert response.status_code == 202, response.content
    job = response.json()["job"]
    assert job["status"] == "queued" and job["source"] == "upload:minutes.pdf" and job["collection"] == "board"
    assert response["Location"] == job["url"] == f"/api/jobs/{job['id']}"
    assert client.get(job["url"]).json() == job
    assert not Document.objects.filter(collection__name="board").exists(), "a worker ingests it, not the request"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("data.exe", b"MZ...", "Unsupported file type"),
        ("bad.txt", b"caf\x81\xe9", "UTF-8"),
        ("odd.txt", b"\xff\xfe\xfa", "UTF-16"),
        ("e.md", b"", "empty"),
    ],
)
def test_bad_uploads_are_400_and_store_nothing(key_client, name, content, message):
    client = key_client
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = client.post("/api/documents", {"file": SimpleUploadedFile(name, content), "collection": "up"})
    assert response.status_code == 400
    assert message in str(response.json()["error"]["fields"])
    assert not Document.objects.filter(collection__name="up").exists()


def test_text_document_needs_text_and_title(key_client):
    client = key_client
    response = client.post("/api/documents", {"title": "x"}, content_type="application/json")
    assert response.status_code == 400 and "text" in response.json()["error"]["fields"]
    response = client.post("/api/documents", {"text": "some text"}, content_type="application/json")
    assert response.status_code == 400 and "title" in response.json()["error"]["fields"]


def test_unknown_document_is_404(key_client):
    client = key_client
    response = client.get("/api/documents/999999")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert client.delete("/api/documents/999999").status_code == 404


def test_a_refused_document_leaves_no_new_collection_behind(key_client):
    response = key_client.post(
        "/api/documents", {"title": "t", "text": "\u0001\u0002", "collection": "ghost"}, content_type="application/json"
    )
    assert response.status_code == 400 and "no text found" in str(response.json()["error"]["fields"])
    assert not Collection.objects.filter(name="ghost").exists()
    assert key_client.get("/api/documents", {"collection": "ghost"}).status_code == 404


def test_a_document_deleted_by_another_request_meanwhile_is_404_not_deleted_twice(key_client):
    from rag.ingestion import delete_document

    memo = {"title": "Memo", "text": "Lunch is at noon.", "collection": "memos"}
    doc_id = key_client.post("/api/documents", memo, content_type="application/json").json()["document"]["id"]
    document = Document.objects.get(pk=doc_id)
    version = Collection.objects.get(name="memos").corpus_version
    assert delete_document(document=document) is True
    assert delete_document(document=document) is False  # the second of two requests that both found it
    assert Collection.objects.get(name="memos").corpus_version == version + 1
    assert key_client.delete(f"/api/documents/{doc_id}").status_code == 404


@pytest.mark.parametrize("name", ["\x00", "abc\x00def", "a b", "x" * 65])
def test_a_collection_parameter_that_cannot_name_one_is_400(key_client, name):
    response = key_client.get("/api/documents", {"collection": name})
    assert response.status_code == 400
    assert "collection" in response.json()["error"]["fields"]


def test_a_text_posted_as_json_is_headed_by_its_title_not_its_first_line(key_client):
    text = "Staff parking is behind building B, and visitors park at the front gate near reception."
    response = key_client.post(
        "/api/documents",
        {"title": "Parking", "text": text, "collection": "hr"},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    answer = key_client.post(
        "/api/query", {"question": "Where do visitors park?", "collection": "hr"}, content_type="application/json"
    ).json()
    assert answer["sources"][0]["title"] == "Parking"
    assert answer["sources"][0]["heading"] == "Parking"  # was the text's first 200 characters


def test_a_title_or_source_cannot_reverse_what_the_page_shows(key_client):
    refused = key_client.post(
        "/api/documents",
        {"title": "Invoice", "text": "Pay within 30 days.", "source": "finance/\u202etxt.exe", "collection": "hr"},
        content_type="application/json",
    )
    assert refused.status_code == 400 and "direction-override" in refused.content.decode()
    accepted = key_client.post(
        "/api/documents",
        {"title": "Invoice \u202eFDP.exe\u202c policy", "text": "Pay within 30 days.", "collection": "hr"},
        content_type="application/json",
    )
    assert accepted.status_code == 201, accepted.content
    document = Document.objects.get(pk=accepted.json()["document"]["id"])
    assert document.title == "Invoice FDP.exe policy" and "\u202e" not in document.source


def test_an_upload_saved_by_windows_notepad_as_unicode_is_queued(key_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("hours.txt", "\ufeffCafé opening hours: eight to six.".encode("utf-16-le"))
    response = key_client.post("/api/documents", {"file": upload, "collection": "up"})
    assert response.status_code == 202, response.content
