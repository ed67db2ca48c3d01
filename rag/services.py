"""What the commands, the API and the search page do: ingest documents, answer questions."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings
from django.contrib.postgres.search import SearchVector
from django.db import IntegrityError, connection, models, transaction

from rag.chunking import chunk_text
from rag.embeddings import Embedder, ensure_vector_index, get_embedder
from rag.generation import extractive_answer, ollama_answer
from rag.models import Chunk, Collection, Document, QueryLog
from rag.readers import MEDIA_TYPES, ReadError, media_type_for, parse_bytes
from rag.retrieval import RetrievedChunk, hybrid_search
from resilience import cache, config, metrics
from resilience.errors import OllamaError, OllamaUnavailable

logger = logging.getLogger(__name__)


class CollectionNotFound(Exception):
    pass


class IngestAborted(Exception):
    """The embedding backend became unavailable; what was written so far stays."""


# INGESTION


@dataclass(frozen=True)
class SourceItem:
    """One document to ingest: where it came from and its raw bytes."""

    source: str
    data: bytes
    media_type: str
    fallback_title: str


@dataclass
class FileResult:
    source: str
    status: str  # new | updated | unchanged | failed
    chunks: int = 0
    reason: str = ""
    document_id: int | None = None


@dataclass
class IngestReport:
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    aborted: str = ""

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def chunks(self) -> int:
        return sum(r.chunks for r in self.results if r.status in ("new", "updated"))

    @property
    def failures(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{self.count('new')} new, {self.count('updated')} updated, {self.count('unchanged')} unchanged, "
            f"{self.count('failed')} failed; {self.chunks} chunks in {self.seconds:.1f} s "
            f"({self.chunks_per_second:.1f} chunks/s)"
        )


@dataclass
class _Pending:
    item: SourceItem
    sha256: str
    title: str
    chunks: list[str]
    existing_id: int | None


def iter_files(paths: Iterable[str | Path]) -> Iterator[Path | tuple[Path, str]]:
    """Files under the given paths (recursively), or (path, reason) for a path that is unusable."""
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if child.suffix.lower() in MEDIA_TYPES and not any(part.startswith(".") for part in child.parts):
                    yield child
        elif path.is_file():
            yield path
        else:
            yield (path, "no such file or directory")


def file_items(paths: Iterable[str | Path]) -> Iterator[SourceItem | FileResult]:
    for entry in iter_files(paths):
        if isinstance(entry, tuple):
            yield FileResult(source=str(entry[0]), status="failed", reason=entry[1])
            continue
        source = str(entry.resolve())
        try:
            media_type = media_type_for(entry)
            data = entry.read_bytes()
        except ReadError as exc:
            yield FileResult(source=source, status="failed", reason=str(exc))
            continue
        except OSError as exc:
            yield FileResult(source=source, status="failed", reason=f"cannot read: {exc.strerror or exc}")
            continue
        yield SourceItem(source=source, data=data, media_type=media_type, fallback_title=entry.stem)


def demo_items() -> Iterator[SourceItem]:
    """The Python Language Reference topics that every CPython ships (no download)."""
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield SourceItem(
            source=f"pydoc:{key}",
            data=topics[key].encode("utf-8"),
            media_type="text/plain",
            fallback_title=key,
        )


def get_or_create_collection(name: str, *, create: bool = True) -> Collection:
    if create:
        collection, _ = Collection.objects.get_or_create(name=name)
        return collection
    try:
        return Collection.objects.get(name=name)
    except Collection.DoesNotExist:
        raise CollectionNotFound(name) from None


def _prepare(item: SourceItem, collection: Collection) -> _Pending | FileResult:
    sha256 = hashlib.sha256(item.data).hexdigest()
    existing = Document.objects.filter(collection=collection, source=item.source).values("id", "sha256").first()
    if existing and existing["sha256"] == sha256:
        return FileResult(source=item.source, status="unchanged", document_id=existing["id"])
    try:
        parsed = parse_bytes(item.data, item.media_type, fallback_title=item.fallback_title)
    except ReadError as exc:
        return FileResult(source=item.source, status="failed", reason=str(exc))
    chunks = chunk_text(parsed.text, size=settings.RAGSITE_CHUNK_SIZE, overlap=settings.RAGSITE_CHUNK_OVERLAP)
    if not chunks:
        return FileResult(source=item.source, status="failed", reason="no text found")
    return _Pending(item, sha256, parsed.title, chunks, existing["id"] if existing else None)


def embedding_input(title: str, chunk: str) -> str:
    """What is embedded for a chunk: its document's title gives a passage its topic."""
    return f"{title}\n\n{chunk}"


def _write(pending: _Pending, vectors: np.ndarray, model_name: str, collection: Collection) -> FileResult:
    """Write one document and its chunks in one transaction: all of it or none of it."""
    item = pending.item
    with transaction.atomic():
        if pending.existing_id is not None:
            document = Document.objects.select_for_update().get(pk=pending.existing_id)
            document.chunks.all().delete()
            document.title = pending.title
            document.sha256 = pending.sha256
            document.media_type = item.media_type
            document.size_bytes = len(item.data)
            document.save()
            status = "updated"
        else:
            document = Document.objects.create(
                collection=collection,
                source=item.source,
                title=pending.title,
                sha256=pending.sha256,
                media_type=item.media_type,
                size_bytes=len(item.data),
            )
            status = "new"
        Chunk.objects.bulk_create(
            Chunk(
                collection=collection,
                document=document,
                ordinal=ordinal,
                text=text,
                embedding=vector,
                embedding_model=model_name,
            )
            for ordinal, (text, vector) in enumerate(zip(pending.chunks, vectors, strict=True))
        )
        Chunk.objects.filter(document=document).update(
            search_vector=SearchVector(models.Value(pending.title), weight="A", config="english")
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
    use_embedding_cache: bool = True,
) -> IngestReport:
    """Ingest documents: unchanged ones are skipped, changed ones replaced, bad ones reported.

    Chunks of several documents are embedded together in batches (the model is much faster on a
    full batch), then each document is written in its own transaction. ``use_embedding_cache=False``
    asks the model for every chunk (benchmarks of the model's throughput).
    """
    started = time.perf_counter()
    report = IngestReport()
    collection = get_or_create_collection(collection_name)
    embedder = embedder or get_embedder()
    # Chunk texts embedded before (an unchanged paragraph of an edited file, the same file in
    # another collection) come from the embedding cache instead of the model.
    cached_embedder = cache.caching(embedder) if use_embedding_cache else embedder
    batch_size = batch_size or config.current().provider.embedding_batch_size
    pending: list[_Pending] = []

    def record(result: FileResult) -> None:
        report.results.append(result)
        if result.status == "failed":
            logger.warning("ingest failed: %s: %s", result.source, result.reason)
        if progress:
            progress(result)

    def flush() -> None:
        if not pending:
            return
        texts = [embedding_input(p.title, chunk) for p in pending for chunk in p.chunks]
        try:
            vectors = cached_embedder.embed(texts)
        except OllamaError as exc:
            for p in pending:
                record(FileResult(p.item.source, "failed", reason=f"embedding failed: {exc.reason}"))
            pending.clear()
            if isinstance(exc, OllamaUnavailable):
                raise IngestAborted(f"embeddings unavailable: {exc.reason}") from exc
            return
        if len(vectors) != len(texts):
            raise IngestAborted(f"embedder returned {len(vectors)} vectors for {len(texts)} texts")
        ensure_vector_index(embedder.name, int(vectors.shape[1]))
        offset = 0
        for p in pending:
            part = vectors[offset : offset + len(p.chunks)]
            offset += len(p.chunks)
            try:
                record(_write(p, part, embedder.name, collection))
            except IntegrityError as exc:
                record(FileResult(p.item.source, "failed", reason=f"database refused it: {exc}"))
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
            if sum(len(p.chunks) for p in pending) >= batch_size:
                flush()
        flush()
    except IngestAborted as exc:
        report.aborted = str(exc)
    report.seconds = time.perf_counter() - started
    metrics.record_ingest(report)
    return report


def ingest_paths(*, paths: Iterable[str | Path], collection_name: str = "default", **kwargs) -> IngestReport:
    return ingest_items(file_items(paths), collection_name=collection_name, **kwargs)


def ingest_demo(*, collection_name: str = "default", **kwargs) -> IngestReport:
    return ingest_items(demo_items(), collection_name=collection_name, **kwargs)


def ingest_document(*, collection_name: str, source: str, data: bytes, media_type: str, title: str = "") -> FileResult:
    """Ingest one document given as bytes (the API's upload and text paths)."""
    item = SourceItem(source=source, data=data, media_type=media_type, fallback_title=title or source)
    report = ingest_items([item], collection_name=collection_name)
    if report.aborted and not report.results:
        return FileResult(source, "failed", reason=report.aborted)
    result = report.results[0]
    if title and result.document_id and result.status in ("new", "updated"):
        Document.objects.filter(pk=result.document_id).update(title=title[:512])
    return result


def delete_document(*, document: Document) -> None:
    with transaction.atomic():
        collection = document.collection
        document.delete()
        collection.bump_version()


# ANSWERING


@dataclass
class Answer:
    question: str
    answer: str
    sources: list[RetrievedChunk]
    collection: str
    cache: str = "miss"  # exact | semantic | miss | bypass (the cache was not consulted)
    degraded: bool = False
    degraded_reason: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    generator: str = "extractive"
    extra: dict = field(default_factory=dict)
    stale: bool = False  # a cached answer past its TTL, served because generation is down
    matched_question: str | None = None  # the cached question a semantic hit answered
    similarity: float | None = None


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def answer_question(
    *,
    question: str,
    collection_name: str = "default",
    k: int = 5,
    use_cache: bool = True,
    log_query: bool = True,
) -> Answer:
    """Answer from the cache, or retrieve the best passages and answer from them.

    Degrades instead of failing when Ollama does: without embeddings, full-text retrieval only;
    without generation, the still-servable stale cached answer or else an extractive one.
    ``use_cache=False`` neither reads nor writes the answer cache. ``log_query=False`` keeps the
    question out of the query log and the hit/miss counters (cache warming).
    """
    started = time.perf_counter()
    embedder = cache.caching(get_embedder())
    caching = use_cache and config.current().cache.enabled
    timings: dict[str, float] = {}
    answer = None
    if caching:
        # The fast path: an exact hit needs no embedding and no query for the collection.
        t = time.perf_counter()
        hit = cache.lookup_exact_named(collection_name, question, embedding_model=embedder.name, k=k)
        timings["cache"] = _ms(time.perf_counter() - t)
        if hit:
            answer = _from_hit(question, collection_name, hit, timings)
    if answer is None:
        collection = get_or_create_collection(collection_name, create=False)
        scope = cache.Scope.for_query(collection, embedding_model=embedder.name, k=k) if caching else None
        answer = _answer(question, collection, k, embedder, scope, timings)
    answer.timings_ms["total"] = _ms(time.perf_counter() - started)
    if log_query:
        _record(answer)
    return answer


def _record(answer: Answer) -> None:
    """Count and log one answered question (the query log, cache counters, metrics)."""
    cache.safely("query log", _log_query, answer, default=None)
    metrics.record_query(
        cache=answer.cache, degraded=answer.degraded, seconds=answer.timings_ms.get("total", 0.0) / 1000
    )


def _log_query(answer: Answer) -> None:
    # Counted and logged in one round trip, committed lazily (see resilience.cache.lazily): this
    # runs on every cache hit.
    count_sql, count_params = cache.increment_sql({cache.lookup_counter(answer.cache): 1})
    with connection.cursor() as cursor:
        cursor.execute(
            cache.lazily(
                f"{count_sql}; INSERT INTO {QueryLog._meta.db_table} "
                "(question, question_hash, collection, cache, latency_ms, degraded, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, now())"
            ),
            [
                *count_params,
                answer.question,
                cache.question_hash(answer.question),
                answer.collection,
                answer.cache,
                answer.timings_ms["total"],
                answer.degraded,
            ],
        )


def _embed_question(
    question: str, embedder: Embedder, reasons: list[str], timings: dict[str, float]
) -> np.ndarray | None:
    """The question's vector, or None (and the reason noted) when the embedder is unavailable."""
    t = time.perf_counter()
    try:
        return embedder.embed([question])[0]
    except OllamaError as exc:
        reasons.append(f"embeddings unavailable: {exc.reason}")
        return None
    finally:
        timings["embed"] = _ms(time.perf_counter() - t)


def _answer(
    question: str,
    collection: Collection,
    k: int,
    embedder: Embedder,
    scope: cache.Scope | None,
    timings: dict[str, float],
) -> Answer:
    """Answer a question the exact lookup missed (or with the cache bypassed: scope None)."""
    reasons: list[str] = []
    query_vector = _embed_question(question, embedder, reasons, timings)

    if scope is None:
        answer, _ = _generate(question, collection, k, embedder.name, query_vector, reasons, timings)
        answer.cache = "bypass"
        return answer

    if query_vector is not None:
        t = time.perf_counter()
        hit = cache.lookup_semantic(scope, question, query_vector)
        timings["cache"] = round(timings["cache"] + _ms(time.perf_counter() - t), 2)
        if hit:
            return _from_hit(question, collection, hit, timings)
        cache.ensure_answer_index(embedder.name, int(query_vector.shape[0]))

    # A miss. Identical misses in flight at once (any thread or worker) wait for the first to
    # answer and then take its answer from the cache: one model call, not N.
    with cache.single_flight(scope, question) as locked:
        if locked:
            hit = cache.lookup_exact(scope, question)
            if hit:
                return _from_hit(question, collection, hit, timings)
        answer, generation_failed = _generate(question, collection, k, embedder.name, query_vector, reasons, timings)
        if generation_failed:
            hit = cache.lookup_stale(scope, question, query_vector)
            if hit:
                cached = _from_hit(question, collection, hit, timings)
                if hit.stale:  # else another worker has just stored a fresh answer
                    cache.count(stale_served=1)
                    cached.degraded = True
                    cached.degraded_reason = f"{answer.degraded_reason}; serving a stale cached answer"
                return cached
        if not answer.degraded and query_vector is not None:
            sources = [cache.source_dict(chunk) for chunk in answer.sources]
            cache.store(scope, question, query_vector, answer.answer, sources, answer.generator)
    return answer


def _generate(
    question: str,
    collection: Collection,
    k: int,
    model_name: str,
    query_vector: np.ndarray | None,
    reasons: list[str],
    timings: dict[str, float],
) -> tuple[Answer, bool]:
    """Retrieve and write the answer; also whether generation itself failed."""
    provider = config.current().provider
    t = time.perf_counter()
    sources = hybrid_search(collection, question, k, model_name=model_name, query_vector=query_vector)
    timings["retrieve"] = _ms(time.perf_counter() - t)

    t = time.perf_counter()
    generator = "extractive"
    failed = False
    if provider.generation_backend == "ollama" and sources:
        try:
            text = ollama_answer(question, sources, model=provider.generation_model).text
            generator = "ollama"
        except OllamaError as exc:
            reasons.append(f"generation unavailable: {exc.reason}")
            text = extractive_answer(question, sources)
            failed = True
    else:
        text = extractive_answer(question, sources)
    if not sources:
        text = "No passage in this collection matches the question."
    timings["generate"] = _ms(time.perf_counter() - t)
    answer = Answer(
        question=question,
        answer=text,
        sources=sources,
        collection=collection.name,
        degraded=bool(reasons),
        degraded_reason="; ".join(reasons) or None,
        timings_ms=timings,
        generator=generator,
    )
    return answer, failed


def _from_hit(question: str, collection: Collection | str, hit: cache.Hit, timings: dict[str, float]) -> Answer:
    sources = [
        RetrievedChunk(
            chunk_id=s["id"],
            document_id=s["document_id"],
            title=s["title"],
            source=s["source"],
            text=s["text"],
            score=s["score"],
        )
        for s in hit.sources
    ]
    return Answer(
        question=question,
        answer=hit.answer,
        sources=sources,
        collection=collection if isinstance(collection, str) else collection.name,
        cache=hit.kind,
        timings_ms=timings,
        generator=hit.generator,
        stale=hit.stale,
        matched_question=hit.question if hit.kind == "semantic" else None,
        similarity=hit.similarity,
    )


# STREAMING


def stream_answer(
    *, question: str, collection_name: str = "default", k: int = 5, use_cache: bool = True
) -> Iterator[dict]:
    """The answer as events: ``meta`` (sources, flags), ``token``s, then ``done`` or ``error``.

    Everything that can refuse the question (an unknown collection) happens before this returns,
    so the caller can still answer with a plain error. With the Ollama backend the tokens are
    passed on as Ollama streams them; a cached or extractive answer is sent in word-sized pieces.
    A generation that fails before its first token falls back to the extractive answer (and
    says so in ``done``); one that fails mid-stream ends with an ``error`` event.
    """
    started = time.perf_counter()
    collection = get_or_create_collection(collection_name, create=False)
    provider = config.current().provider
    if provider.generation_backend != "ollama":
        answer = answer_question(question=question, collection_name=collection_name, k=k, use_cache=use_cache)
        return _replay(answer)

    timings: dict[str, float] = {}
    embedder = cache.caching(get_embedder())
    scope = None
    if use_cache and config.current().cache.enabled:
        scope = cache.Scope.for_query(collection, embedding_model=embedder.name, k=k)
        hit = cache.lookup_exact(scope, question)
        if hit:
            return _replay(_finish(_from_hit(question, collection, hit, timings), started))
    reasons: list[str] = []
    query_vector = _embed_question(question, embedder, reasons, timings)
    if scope is not None and query_vector is not None:
        hit = cache.lookup_semantic(scope, question, query_vector)
        if hit:
            return _replay(_finish(_from_hit(question, collection, hit, timings), started))
    t = time.perf_counter()
    sources = hybrid_search(collection, question, k, model_name=embedder.name, query_vector=query_vector)
    timings["retrieve"] = _ms(time.perf_counter() - t)
    answer = Answer(
        question=question,
        answer="",
        sources=sources,
        collection=collection.name,
        cache="miss" if scope is not None else "bypass",
        degraded=bool(reasons),
        degraded_reason="; ".join(reasons) or None,
        timings_ms=timings,
        generator="ollama",
    )
    return _generate_stream(answer, scope, query_vector, provider.generation_model, started)


def _finish(answer: Answer, started: float) -> Answer:
    answer.timings_ms["total"] = _ms(time.perf_counter() - started)
    _record(answer)
    return answer


def meta_event(answer: Answer) -> dict:
    return {
        "type": "meta",
        "question": answer.question,
        "collection": answer.collection,
        "sources": [cache.source_dict(chunk) for chunk in answer.sources],
        "cache": answer.cache,
        "degraded": answer.degraded,
        "degraded_reason": answer.degraded_reason,
        "stale": answer.stale,
    }


def done_event(answer: Answer) -> dict:
    return {
        "type": "done",
        "answer": answer.answer,
        "generator": answer.generator,
        "cache": answer.cache,
        "degraded": answer.degraded,
        "degraded_reason": answer.degraded_reason,
        "timings_ms": answer.timings_ms,
    }


def _pieces(text: str) -> Iterator[str]:
    """Word-sized pieces that join back to exactly ``text``."""
    words = text.split(" ")
    for index in range(0, len(words), 3):
        piece = " ".join(words[index : index + 3])
        yield piece if index + 3 >= len(words) else piece + " "


def _replay(answer: Answer) -> Iterator[dict]:
    yield meta_event(answer)
    for piece in _pieces(answer.answer):
        yield {"type": "token", "text": piece}
    yield done_event(answer)


def _generate_stream(
    answer: Answer, scope: cache.Scope | None, query_vector: np.ndarray | None, model: str, started: float
) -> Iterator[dict]:
    from rag.generation import build_messages
    from resilience.client import get_client

    yield meta_event(answer)
    if not answer.sources:
        answer.answer, answer.generator = "No passage in this collection matches the question.", "extractive"
        yield from ({"type": "token", "text": p} for p in _pieces(answer.answer))
        yield done_event(_finish(answer, started))
        return
    provider = config.current().provider
    t = time.perf_counter()
    pieces: list[str] = []
    try:
        stream = get_client().chat_stream(
            build_messages(answer.question, answer.sources),
            model,
            options={"num_ctx": provider.num_ctx, "temperature": 0.1},
            keep_alive=provider.keep_alive,
        )
        for piece in stream:
            pieces.append(piece)
            yield {"type": "token", "text": piece}
    except OllamaError as exc:
        answer.degraded = True
        reason = f"generation unavailable: {exc.reason}"
        answer.degraded_reason = f"{answer.degraded_reason}; {reason}" if answer.degraded_reason else reason
        answer.timings_ms["generate"] = _ms(time.perf_counter() - t)
        if pieces:
            answer.answer = "".join(pieces)
            _finish(answer, started)
            yield {"type": "error", "error": {"code": "generation_failed", "message": reason}}
            return
        answer.answer, answer.generator = extractive_answer(answer.question, answer.sources), "extractive"
        yield from ({"type": "token", "text": p} for p in _pieces(answer.answer))
        yield done_event(_finish(answer, started))
        return
    answer.answer = "".join(pieces).strip()
    answer.timings_ms["generate"] = _ms(time.perf_counter() - t)
    if scope is not None and query_vector is not None and not answer.degraded:
        sources = [cache.source_dict(chunk) for chunk in answer.sources]
        cache.store(scope, answer.question, query_vector, answer.answer, sources, "ollama")
    yield done_event(_finish(answer, started))
