"""Two writers of the same document: the last one's text stands, neither is told its text is bad."""

from __future__ import annotations

import hashlib
import threading

import pytest
from django.db import connection

from rag.ingestion import ingest_document, ingest_items
from rag.models import CachedEmbedding, Chunk, Collection, Document
from rag.sources import FileStatus, SourceItem


def _item(text: str) -> SourceItem:
    return SourceItem(source="api:rota", data=text.encode(), media_type="text/plain", fallback_title="Rota")


@pytest.mark.django_db
def test_a_document_created_by_another_writer_after_it_was_read_is_replaced():
    def items():
        yield _item("The night shift starts at ten in the evening.")
        # Between reading the first (no such document yet) and writing it, another writer stores it.
        other = ingest_document(
            collection_name="ops", source="api:rota", data=b"The rota is on the wall.", media_type="text/plain"
        )
        assert other.status == FileStatus.NEW

    report = ingest_items(items(), collection_name="ops")
    assert [r.status for r in report.results] == [FileStatus.UPDATED]
    document = Document.objects.get(collection__name="ops", source="api:rota")
    texts = [c.text for c in Chunk.objects.filter(document=document)]
    assert texts == ["The night shift starts at ten in the evening."]


@pytest.mark.django_db
def test_a_document_deleted_by_another_writer_after_it_was_read_is_written_anew():
    ingest_document(collection_name="ops", source="api:rota", data=b"The rota is on the wall.", media_type="text/plain")

    def items():
        yield _item("The rota moved to the wiki.")
        Document.objects.filter(source="api:rota").delete()

    report = ingest_items(items(), collection_name="ops")
    assert [r.status for r in report.results] == [FileStatus.NEW]
    assert Document.objects.get(source="api:rota").chunks.get().text == "The rota moved to the wiki."


def test_concurrent_writers_of_one_new_document_all_succeed(django_db_setup, django_db_blocker):
    # Each writer commits on its own connection, as requests do; the test removes what they wrote
    # (a transactional test would empty the whole database, the session's demo corpus with it).
    texts = [f"Version {n} of the rota: shift {n} starts at {n} o'clock." for n in range(4)]
    start = threading.Barrier(len(texts))
    results: dict[int, object] = {}

    def write(n: int) -> None:
        try:
            start.wait()
            results[n] = ingest_document(
                collection_name="ops-race",
                source="api:rota",
                data=texts[n].encode(),
                media_type="text/plain",
                title=f"Rota {n}",
            )
        finally:
            connection.close()

    with django_db_blocker.unblock():
        cached_before = CachedEmbedding.objects.order_by("-id").values_list("id", flat=True).first() or 0
        try:
            threads = [threading.Thread(target=write, args=(n,)) for n in range(len(texts))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            statuses = sorted(r.status for r in results.values())
            assert FileStatus.FAILED not in statuses, [r.reason for r in results.values()]
            assert statuses.count(FileStatus.NEW) == 1
            document = Document.objects.get(collection__name="ops-race", source="api:rota")
            text = document.chunks.get().text
            assert text in texts and hashlib.sha256(text.encode()).hexdigest() == document.sha256  # one writer's
            assert document.title == f"Rota {texts.index(text)}"  # that writer's title with its text
            assert Document.objects.filter(collection__name="ops-race").count() == 1
        finally:
            Collection.objects.filter(name="ops-race").delete()
            CachedEmbedding.objects.filter(id__gt=cached_before).delete()
