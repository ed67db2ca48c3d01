"""Ingestion: documents from files, the demo corpus or the API, chunked, embedded and stored.

Unchanged documents (same SHA-256) are skipped, changed ones replaced in one transaction, and a
bad one is reported with its reason and leaves nothing behind (a new collection is created with its
first document, not before).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings
from django.contrib.postgres.search import SearchVector
from django.db import IntegrityError, transaction

from rag import metrics
from rag.chunking import answer_sentences, chunk_sections
from rag.collections import get_collection
from rag.embedding_cache import caching
from rag.embeddings import Embedder, ensure_vector_index, get_embedder, has_vector_index, text_lengths
from rag.models import Chunk, Collection, Document, Sentence, Visibility
from rag.readers import ReadError, clean_title, parse_bytes
from rag.sources import FileResult, FileStatus, SourceItem, demo_items, file_items
from resilience import config
from resilience.errors import OllamaError, OllamaUnavailable

logger = logging.getLogger(__name__)

# Changed whenever readers, chunking or what is embedded change: documents written by another
# pipeline are ingested again even though their files did not change. (4: HTML keeps the text of
# every element, not only of paragraphs, list items, headings and cells; more encodings; sentences
# with figures, after "Mr." or "e.g.", in Chinese and Japanese.)
PIPELINE_VERSION = "4"

# Documents are embedded together until they hold this many batches of chunks (with their
# sentences, about five times as many texts): the more texts sorted by length at once, the less
# padding each batch carries; what is embedded is written before the next group starts.
FLUSH_BATCHES = 4


class IngestAborted(Exception):
    """The embedding backend became unavailable; what was written so far stays."""


@dataclass
class IngestReport:
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    aborted: str = ""

    def count(self, status: FileStatus) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def chunks(self) -> int:
        return sum(r.chunks for r in self.results if r.status in (FileStatus.NEW, FileStatus.UPDATED))

    @property
    def failures(self) -> list[FileResult]:
        return [r for r in self.results if r.status == FileStatus.FAILED]

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{self.count(FileStatus.NEW)} new, {self.count(FileStatus.UPDATED)} updated, "
            f"{self.count(FileStatus.UNCHANGED)} unchanged, {self.count(FileStatus.FAILED)} failed; "
            f"{self.chunks} chunks in {self.seconds:.1f} s "
            f"({self.chunks_per_second:.1f} chunks/s)"
        )


@dataclass
class _Pending:
    item: SourceItem
    sha256: str
    title: str
    chunks: list[tuple[str, str]]  # (heading path, text)
    sentences: list[list[str]] = field(default_factory=list)  # per chunk, embedded one by one too


def _prepare(item: SourceItem, collection: Collection | None) -> _Pending | FileResult:
    sha256 = hashlib.sha256(item.data).hexdigest()
    existing = (
        Document.objects.filter(collection=collection, file_root=item.root, source=item.source)
        .values("id", "sha256", "pipeline")
        .first()
        if collection is not None
        else None
    )
    if existing and existing["sha256"] == sha256 and existing["pipeline"] == PIPELINE_VERSION:
        return FileResult(source=item.source, status=FileStatus.UNCHANGED, document_id=existing["id"])
    try:
        parsed = parse_bytes(item.data, item.media_type, fallback_title=item.fallback_title)
    except ReadError as exc:
        return FileResult(source=item.source, status=FileStatus.FAILED, reason=str(exc))
    # The title given with the document (the API's) names it, in its heading paths too: the
    # first line of a text posted as JSON is no title.
    title = clean_title(item.title)[:512] or parsed.title
    chunks = chunk_sections(
        parsed.sections,
        title=title,
        size=settings.RAGSITE_CHUNK_SIZE,
        overlap=settings.RAGSITE_CHUNK_OVERLAP,
    )
    if not chunks:
        return FileResult(source=item.source, status=FileStatus.FAILED, reason="no text found")
    sentences = [answer_sentences(text) for _, text in chunks]
    return _Pending(item, sha256, title, chunks, sentences)


def _batch_plan(texts: list[str], embedder: Embedder, arrange: bool) -> tuple[list[str], list[int], list[int]]:
    """(the distinct texts, the order to embed them in, each text's place among the distinct).

    Each distinct text once (overlapping chunks share sentences: a quarter of the demo corpus's),
    in batches cut from the texts sorted by their length in tokens: the model pads a batch to its
    longest text, so a chunk no longer makes the sentences batched with it pay for its length
    (sorted by characters instead, the demo corpus's batches carry 1.4x the tokens). ``arrange=False``
    keeps every text in the order found, as ingestion once did (benchmarks compare the two).
    """
    if not arrange:
        return texts, list(range(len(texts))), list(range(len(texts)))
    slot: dict[str, int] = {}
    back = [slot.setdefault(text, len(slot)) for text in texts]
    distinct = list(slot)
    lengths = text_lengths(embedder, distinct)
    return distinct, sorted(range(len(distinct)), key=lambda i: lengths[i], reverse=True), back


def embedding_input(heading: str, chunk: str) -> str:
    """What is embedded for a chunk: its heading path (title > section) gives a passage its topic."""
    return f"{heading}\n\n{chunk}"


def _locked_document(collection: Collection, item: SourceItem) -> Document | None:
    return (
        Document.objects.select_for_update()
        .filter(collection=collection, file_root=item.root, source=item.source)
        .first()
    )


def _claim(pending: _Pending, collection: Collection) -> tuple[Document, FileStatus]:
    """The document row ``pending`` is written to, locked: a new one, or the one it replaces.

    Found here rather than when the document was read: another writer (a second request with the
    same source, a worker) may have created, replaced or deleted it since. The last writer's text
    stands, as if they had come one after the other; the same bytes stored meanwhile are UNCHANGED.
    """
    item = pending.item
    document = _locked_document(collection, item)
    if document is None:
        try:
            with transaction.atomic():
                document = Document.objects.create(
                    collection=collection,
                    source=item.source,
                    file_root=item.root,
                    title=pending.title,
                    sha256=pending.sha256,
                    media_type=item.media_type,
                    size_bytes=len(item.data),
                    pipeline=PIPELINE_VERSION,
                )
            return document, FileStatus.NEW
        except IntegrityError:
            document = _locked_document(collection, item)  # created by another writer meanwhile
            if document is None:
                raise
    if document.sha256 == pending.sha256 and document.pipeline == PIPELINE_VERSION:
        return document, FileStatus.UNCHANGED
    document.chunks.all().delete()
    document.title = pending.title
    document.sha256 = pending.sha256
    document.media_type = item.media_type
    document.size_bytes = len(item.data)
    document.pipeline = PIPELINE_VERSION
    document.save()
    return document, FileStatus.UPDATED


@dataclass(frozen=True)
class Into:
    """Which collection a queued document may be written to, decided when it was queued: the one
    with id ``pk`` (None: a new one, which may be created, or found public)."""

    pk: int | None


def _target(collection_name: str, into: Into | None) -> Collection | str:
    """The collection to write to (created if need be), or why the document may not be written."""
    if into is None:
        return get_collection(collection_name, create=True)
    if into.pk is not None:
        found = Collection.objects.filter(pk=into.pk, name=collection_name).first()
        return found or f"collection {collection_name!r} was deleted or renamed after the document was queued"
    collection = get_collection(collection_name, create=True)
    if collection.visibility != Visibility.PUBLIC:
        return f"collection {collection_name!r} was created restricted after the document was queued"
    return collection


def _write(
    pending: _Pending,
    vectors: np.ndarray,
    sentence_vectors: np.ndarray,
    model_name: str,
    collection_name: str,
    into: Into | None = None,
) -> FileResult:
    """Write one document and its chunks in one transaction: all of it or none of it (the
    collection too, when this is its first document)."""
    item = pending.item
    with transaction.atomic():
        collection = _target(collection_name, into)
        if isinstance(collection, str):
            return FileResult(item.source, FileStatus.FAILED, reason=collection)
        document, status = _claim(pending, collection)
        if status == FileStatus.UNCHANGED:
            return FileResult(item.source, status, document_id=document.pk)
        chunks = Chunk.objects.bulk_create(
            Chunk(
                collection=collection,
                document=document,
                ordinal=ordinal,
                heading=heading,
                text=text,
                embedding=vector,
                embedding_model=model_name,
            )
            for ordinal, ((heading, text), vector) in enumerate(zip(pending.chunks, vectors, strict=True))
        )
        vectors_left = iter(sentence_vectors)
        Sentence.objects.bulk_create(
            Sentence(
                chunk=chunk, position=position, text=text, embedding=next(vectors_left), embedding_model=model_name
            )
            for chunk, texts in zip(chunks, pending.sentences, strict=True)
            for position, text in enumerate(texts)
        )
        # The heading path (the title, then the sections) weighs like the title did.
        Chunk.objects.filter(document=document).update(
            search_vector=SearchVector("heading", weight="A", config="english")
            + SearchVector("text", weight="B", config="english")
        )
        collection.bump_version()
    return FileResult(item.source, status, len(pending.chunks), document_id=document.pk)


def ingest_items(
    items: Iterable[SourceItem | FileResult],
    *,
    collection_name: str = "default",
    embedder: Embedder | None = None,
    batch_size: int | None = None,
    progress: Callable[[FileResult], None] | None = None,
    chunk_progress: Callable[[int, int], None] | None = None,
    use_embedding_cache: bool = True,
    arrange_batches: bool = True,
    into: Into | None = None,
) -> IngestReport:
    """Ingest documents: unchanged ones are skipped, changed ones replaced, bad ones reported.

    Chunks of several documents are embedded together in batches (the model is much faster on a
    full batch), then each document is written in its own transaction. ``chunk_progress(done,
    total)`` is told after each batch how many chunks are embedded of those found so far.
    ``use_embedding_cache=False`` asks the model for every chunk and ``arrange_batches=False``
    embeds every text in the order found, as ingestion once did (benchmarks of the model's throughput).
    ``into`` (queued documents) is the collection decided when they were queued.
    """
    started = time.perf_counter()
    report = IngestReport()
    collection = Collection.objects.filter(name=collection_name).first()  # created with its first document
    embedder = embedder or get_embedder()
    # Chunk texts embedded before (an unchanged paragraph of an edited file, the same file in
    # another collection) come from the embedding cache instead of the model.
    cached_embedder = caching(embedder) if use_embedding_cache else embedder
    batch_size = batch_size or config.current().provider.embedding_batch_size
    pending: list[_Pending] = []
    counts = {"embedded": 0, "found": 0}
    # A model without a vector index yet (the first ingest with a new model) gets it once the
    # chunks are written: building it is several times faster than inserting into a live one.
    index: dict[str, int] = {}

    def record(result: FileResult) -> None:
        report.results.append(result)
        if result.status == FileStatus.FAILED:
            logger.warning("ingest failed: %s: %s", result.source, result.reason)
        if progress:
            progress(result)

    def flush() -> None:
        if not pending:
            return
        texts = [embedding_input(heading, chunk) for p in pending for heading, chunk in p.chunks]
        sentences = [sentence for p in pending for chunk in p.sentences for sentence in chunk]
        everything = texts + sentences
        distinct, order, back = _batch_plan(everything, embedder, arrange_batches)
        chunk_copies = Counter(back[: len(texts)])
        vectors: np.ndarray | None = None
        try:
            # A batch at a time, so that a long document reports its progress as it goes.
            for start in range(0, len(order), batch_size):
                picked = order[start : start + batch_size]
                part = cached_embedder.embed([distinct[i] for i in picked])
                if len(part) != len(picked):
                    raise IngestAborted(f"embedder returned {len(part)} vectors for {len(picked)} texts")
                if vectors is None:
                    vectors = np.empty((len(distinct), part.shape[1]), dtype=np.float32)
                vectors[picked] = part
                counts["embedded"] += sum(chunk_copies[i] for i in picked)  # chunks, not sentences
                if chunk_progress:
                    chunk_progress(counts["embedded"], counts["found"])
        except OllamaError as exc:
            unavailable = isinstance(exc, OllamaUnavailable)
            for p in pending:
                reason = f"embedding failed: {exc.reason}"
                record(FileResult(p.item.source, FileStatus.FAILED, reason=reason, retryable=unavailable))
            pending.clear()
            if unavailable:
                raise IngestAborted(f"embeddings unavailable: {exc.reason}") from exc
            return
        assert vectors is not None  # pending documents have at least one chunk each
        vectors = vectors[back]
        if not index:
            index["dimensions"] = int(vectors.shape[1])
            index["build_after"] = not has_vector_index(embedder.name, index["dimensions"])
        if not index["build_after"]:
            ensure_vector_index(embedder.name, index["dimensions"])
        offset, sentence_offset = 0, len(texts)
        for p in pending:
            part = vectors[offset : offset + len(p.chunks)]
            offset += len(p.chunks)
            count = sum(len(chunk) for chunk in p.sentences)
            sentence_part = vectors[sentence_offset : sentence_offset + count]
            sentence_offset += count
            try:
                record(_write(p, part, sentence_part, embedder.name, collection_name, into))
            except IntegrityError as exc:
                record(FileResult(p.item.source, FileStatus.FAILED, reason=f"database refused it: {exc}"))
        pending.clear()

    try:
        for item in items:
            if isinstance(item, FileResult):
                record(item)
                continue
            prepared = _prepare(item, collection)
            if isinstance(prepared, FileResult):
                record(prepared)
                continue
            pending.append(prepared)
            counts["found"] += len(prepared.chunks)
            if sum(len(p.chunks) for p in pending) >= batch_size * FLUSH_BATCHES:
                flush()
        flush()
    except IngestAborted as exc:
        report.aborted = str(exc)
    if index.get("build_after") and report.chunks:
        ensure_vector_index(embedder.name, index["dimensions"])
    report.seconds = time.perf_counter() - started
    metrics.record_ingest(statuses=[r.status for r in report.results], chunks=report.chunks)
    return report


def ingest_paths(*, paths: Iterable[str | Path], collection_name: str = "default", **kwargs) -> IngestReport:
    return ingest_items(file_items(paths), collection_name=collection_name, **kwargs)


def ingest_demo(*, collection_name: str = "default", **kwargs) -> IngestReport:
    return ingest_items(demo_items(), collection_name=collection_name, **kwargs)


def ingest_document(
    *,
    collection_name: str,
    source: str,
    data: bytes,
    media_type: str,
    title: str = "",
    fallback_title: str = "",
    root: str = "",
    chunk_progress: Callable[[int, int], None] | None = None,
    into: Into | None = None,
) -> FileResult:
    """Ingest one document given as bytes (the API's upload and text paths, and jobs; ``root`` is the
    folder of a file queued by the ingest command)."""
    item = SourceItem(
        source=source,
        data=data,
        media_type=media_type,
        fallback_title=title or fallback_title or source,
        root=root,
        title=title,
    )
    report = ingest_items([item], collection_name=collection_name, chunk_progress=chunk_progress, into=into)
    if report.aborted and not report.results:
        return FileResult(source, FileStatus.FAILED, reason=report.aborted, retryable=True)
    result = report.results[0]
    if result.retryable and report.aborted:
        result.reason = report.aborted  # "embeddings unavailable: ...", the cause rather than its effect
    return result


def delete_document(*, document: Document) -> bool:
    """Delete a document and its chunks; False when it was gone already (deleted by another request)."""
    with transaction.atomic():
        # Locked first: a re-ingest replacing its chunks meanwhile finishes before the delete starts.
        locked = Document.objects.select_for_update().filter(pk=document.pk).first()
        if locked is None:
            return False
        locked.delete()
        document.collection.bump_version()
    return True
