"""Hybrid retrieval: pgvector cosine neighbours and Postgres full-text ranking, fused by RRF.

Both searches run inside the collections a question is asked of: their ids are in each search's
SQL (rag.visibility resolved them, and only those the caller may read). Reciprocal rank fusion
(score = sum of 1 / (60 + rank)) needs no score calibration between the two lists, and a chunk
found by both rises to the top.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.backends.utils import CursorWrapper

from rag import sql, vector_plan
from rag.models import Chunk
from rag.query import search_text
from rag.ranking import Candidate, diversify, rerank
from rag.visibility import CollectionSet

logger = logging.getLogger(__name__)

RRF_K = 60
# Chunks taken from each ranking before fusion, whatever k: a larger k only reads further down.
CANDIDATES = 25


@dataclass
class RetrievedChunk:
    chunk_id: int
    document_id: int
    title: str
    source: str
    text: str
    score: float
    chunk_ids: list[int] = field(default_factory=list)  # the neighbouring chunks merged into this source
    heading: str = ""  # title > section > subsection
    # The sentences' similarity to the question, when reranked (not shown, not cached): the
    # extractive answer picks from them.
    sentences: list[tuple[int, str, float]] = field(default_factory=list, repr=False)
    relevance: float | None = None  # how well the best of its sentences matches the question
    collection: str = ""  # the collection's name

    def as_source(self) -> dict[str, Any]:
        """The chunk as the API shows a source (and as a cached answer stores it)."""
        return {
            "id": self.chunk_id,
            "document_id": self.document_id,
            "title": self.title,
            "source": self.source,
            "score": self.score,
            "text": self.text,
            "chunk_ids": self.chunk_ids or [self.chunk_id],
            "heading": self.heading or self.title,
            "collection": self.collection,
        }

    @classmethod
    def from_source(cls, source: dict[str, Any]) -> RetrievedChunk:
        return cls(
            chunk_id=source["id"],
            document_id=source["document_id"],
            title=source["title"],
            source=source["source"],
            text=source["text"],
            score=source["score"],
            chunk_ids=source.get("chunk_ids") or [source["id"]],
            heading=source.get("heading") or source["title"],
            collection=source.get("collection", ""),
        )

    @classmethod
    def from_candidate(cls, candidate: Candidate) -> RetrievedChunk:
        return cls(
            chunk_id=candidate.chunk_id,
            document_id=candidate.document_id,
            title=candidate.title,
            source=candidate.source,
            text=candidate.text,
            score=round(candidate.score, 6),
            chunk_ids=candidate.merged or [candidate.chunk_id],
            heading=candidate.heading or candidate.title,
            sentences=candidate.sentences,
            relevance=candidate.best_sentence,
            collection=candidate.collection,
        )


def vector_search(
    collection_ids: Sequence[int], model_name: str, query_vector: np.ndarray, limit: int
) -> list[tuple[int, float]]:
    """(chunk id, cosine similarity) of the nearest chunks of the collections embedded by ``model_name``.

    An exact scan or the HNSW index, whichever finds the true nearest chunks at the collections'
    size (rag.vector_plan).
    """
    plan = vector_plan.choose(collection_ids, model_name)
    rows = sql.nearest(
        table=Chunk._meta.db_table,
        columns="id",
        where="embedding_model = %s AND collection_id = ANY(%s)",
        params=[model_name, list(collection_ids)],
        vector=query_vector,
        limit=limit,
        ef_search=plan.ef_search,
        min_rows=limit,
        exact=plan.exact,
        iterative=plan.iterative,
    )
    return [(int(row[0]), float(row[1])) for row in rows]


# The question's distinct lexemes, ORed: a natural question whose every word is not in one chunk
# still finds the chunks holding most of them, and ts_rank_cd rewards those holding more of them,
# closer together. Its cost grows faster than the number of terms (on the demo corpus, for common
# words: 4 terms 7 ms, 12 terms 21 ms, 32 terms 77 ms; a 2000-character question ORed word by word
# was a 547-node query taking 1.25 s), so a question keeps at most MAX_QUERY_TERMS distinct
# lexemes, its longest: longer words tend to be the rarer, more telling ones; ties go to the
# earlier word. Few questions have more than a dozen distinct content words.
MAX_QUERY_TERMS = 12
# Each lexeme is quoted for tsquery input (quotes and backslashes doubled) so it is taken as it is;
# to_tsquery would stem the already stemmed lexemes a second time.
_TSQUERY = (
    "SELECT coalesce(string_agg('''' || replace(replace(lexeme, '\\', '\\\\'), '''', '''''') || '''', ' | '), '')"
    "::tsquery AS query FROM (SELECT lexeme FROM unnest(to_tsvector('english', %s)) AS t(lexeme, positions, weights) "
    "ORDER BY length(lexeme) DESC, positions[1] LIMIT %s) AS lexemes"
)
QUERY_CANCELED = "57014"  # the SQLSTATE of a statement cancelled by statement_timeout


def query_terms(question: str) -> str:
    """The tsquery full-text search runs for a question, as text."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT query::text FROM ({_TSQUERY}) AS q", [question, MAX_QUERY_TERMS])
        return cursor.fetchone()[0]


def text_search(collection_ids: Sequence[int], question: str, limit: int) -> list[tuple[int, float]]:
    """(chunk id, rank) of the chunks of the collections that best match the question's words.

    Runs under ``RAGSITE_RETRIEVAL_TIMEOUT_MS``: past it the full-text list is given up (and
    logged), and the caller ranks by vectors alone rather than holding a worker.
    """
    statement = (
        f"WITH q AS ({_TSQUERY}) "
        "SELECT c.id, ts_rank_cd(c.search_vector, q.query, 32) AS rank "
        "FROM rag_chunk c, q WHERE c.collection_id = ANY(%s) AND q.query::text <> '' "
        "AND c.search_vector @@ q.query ORDER BY rank DESC, c.id LIMIT %s"
    )
    try:
        with statement_timeout(settings.RAGSITE_RETRIEVAL_TIMEOUT_MS) as cursor:
            cursor.execute(statement, [question, MAX_QUERY_TERMS, list(collection_ids), limit])
            return [(int(row[0]), float(row[1])) for row in cursor.fetchall()]
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != QUERY_CANCELED:
            raise
        logger.warning(
            "full-text search cancelled after %d ms (a question of %d characters): ranking by vectors alone",
            settings.RAGSITE_RETRIEVAL_TIMEOUT_MS,
            len(question),
        )
        return []


@contextmanager
def statement_timeout(milliseconds: int) -> Iterator[CursorWrapper]:
    """A cursor whose statements Postgres cancels after ``milliseconds`` (0: never).

    The limit is set for a transaction (a savepoint inside one) and put back at the end, so it
    never outlives the block; a cancelled statement rolls the savepoint back, setting and all.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('statement_timeout')")
        previous = cursor.fetchone()[0]
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(milliseconds)])
        yield cursor
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [previous])


def fuse(rankings: list[list[int]], k: int) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of several ranked id lists; the best ``k`` (id, score)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]


def candidates(
    collections: CollectionSet,
    question: str,
    *,
    model_name: str | None = None,
    query_vector: np.ndarray | None = None,
    limit: int = CANDIDATES,
    words: str | None = None,
) -> list[Candidate]:
    """The first stage: the best of each ranking, fused, with their chunks' text and documents.

    ``words`` is what the full-text search looks for (rag.query.search_text of the question).
    """
    ids = collections.ids
    words = search_text(collections, question) if words is None else words
    vector_hits = vector_search(ids, model_name, query_vector, limit) if query_vector is not None else []
    text_hits = text_search(ids, words, limit)
    fused = fuse([[chunk_id for chunk_id, _ in vector_hits], [chunk_id for chunk_id, _ in text_hits]], 2 * limit)
    if not fused:
        return []
    similarity = dict(vector_hits)
    rows = (
        Chunk.objects.filter(pk__in=[chunk_id for chunk_id, _ in fused], collection_id__in=ids)
        .select_related("document")
        .defer("embedding", "search_vector", "document__sha256")
    )
    by_id = {chunk.pk: chunk for chunk in rows}
    found = []
    for chunk_id, score in fused:
        chunk = by_id.get(chunk_id)
        if chunk is None:  # deleted between the two queries
            continue
        found.append(
            Candidate(
                chunk_id=chunk.pk,
                document_id=chunk.document_id,
                ordinal=chunk.ordinal,
                title=chunk.document.title,
                source=chunk.document.source,
                text=chunk.text,
                score=score,
                similarity=similarity.get(chunk_id),
                heading=chunk.heading,
                collection=collections.name_of(chunk.collection_id),
            )
        )
    return found


def hybrid_search(
    collections: CollectionSet,
    question: str,
    k: int,
    *,
    model_name: str | None = None,
    query_vector: np.ndarray | None = None,
    max_per_document: int | None = None,
    timings: dict[str, float] | None = None,
) -> list[RetrievedChunk]:
    """The ``k`` best sources; full-text only when no query vector is given (degraded mode).

    The candidates do not depend on ``k``, so the first five of ten sources are the five sources.
    ``timings`` receives the milliseconds of each stage: ``search`` (both rankings, fused) and
    ``rerank``.
    """
    timings = {} if timings is None else timings
    started = time.perf_counter()
    words = search_text(collections, question)
    found = candidates(
        collections,
        question,
        model_name=model_name,
        query_vector=query_vector,
        limit=max(CANDIDATES, 2 * k),
        words=words,
    )
    reranked = time.perf_counter()
    timings["search"] = round((reranked - started) * 1000, 2)
    if query_vector is not None and model_name is not None and settings.RAGSITE_RERANK:
        found = rerank(
            found,
            model_name=model_name,
            query_vector=query_vector,
            collections=collections,
            text=words,
            max_terms=MAX_QUERY_TERMS,
        )
        timings["rerank"] = round((time.perf_counter() - reranked) * 1000, 2)
    if max_per_document is None:
        max_per_document = settings.RAGSITE_MAX_PER_DOCUMENT
    return [RetrievedChunk.from_candidate(c) for c in diversify(found, k, max_per_document=max_per_document)]
