"""Request bodies: RAGSITE_MAX_BODY_BYTES for everything but file uploads, refused before reading."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from rag.models import Document, Job

pytestmark = pytest.mark.django_db

MB = 1024 * 1024


class UnreadableBody:
    """A request body that fails the test if anything reads it."""

    def read(self, *args):
        raise AssertionError("the body was read")

    readline = read


def test_a_3_mb_json_query_is_refused_with_413(client, settings):
    assert settings.RAGSITE_MAX_BODY_BYTES < 3 * MB < settings.RAGSITE_MAX_UPLOAD_BYTES
    body = json.dumps({"question": "x" * (3 * MB)})
    response = client.post("/api/query", body, content_type="application/json")
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "too_large" and "too large" in error["message"]


def test_a_3_mb_json_document_is_refused_even_with_a_key(key_client):
    body = json.dumps({"title": "Big", "text": "word " * (MB * 3 // 5), "collection": "big"})
    response = key_client.post("/api/documents", body, content_type="application/json")
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    assert not Document.objects.filter(collection__name="big").exists()


def test_a_large_body_elsewhere_is_refused_unread(client, settings):
    response = client.generic(
        "POST",
        "/api/query",
        content_type="multipart/form-data; boundary=x",
        CONTENT_LENGTH=str(settings.RAGSITE_MAX_BODY_BYTES + 1),
        **{"wsgi.input": UnreadableBody()},
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


def test_an_upload_within_the_upload_limit_still_works(key_client, make_pdf, settings):
    pdf = make_pdf("The harbour crane is inspected every spring.", padding=3 * MB)
    assert settings.RAGSITE_MAX_BODY_BYTES < len(pdf) < settings.RAGSITE_MAX_UPLOAD_BYTES
    upload = SimpleUploadedFile("crane.pdf", pdf, "application/pdf")
    response = key_client.post("/api/documents", {"file": upload, "collection": "port"})
    assert response.status_code == 202, response.content  # accepted whole, queued for a worker
    job = Job.objects.get(pk=response.json()["job"]["id"])
    assert len(job.upload.data) == len(pdf)


def test_an_upload_over_the_limit_is_refused_before_its_body_is_read(key_client, settings):
    response = key_client.generic(
        "POST",
        "/api/documents",
        content_type="multipart/form-data; boundary=x",
        CONTENT_LENGTH=str(settings.RAGSITE_MAX_UPLOAD_BYTES + MB),
        **{"wsgi.input": UnreadableBody()},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def test_an_upload_over_a_lowered_limit_is_413(key_client, settings):
    settings.RAGSITE_MAX_UPLOAD_BYTES = 100_000
    upload = SimpleUploadedFile("big.txt", b"word " * 60_000)
    response = key_client.post("/api/documents", {"file": upload, "collection": "big"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    assert not Document.objects.filter(collection__name="big").exists()
