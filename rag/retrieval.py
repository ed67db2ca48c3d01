"""Hybrid retrieval: pgvector cosine neighbours and Postgres full-text ranking, fused by RRF.

Both searches run inside the collections a question is asked of: their ids are in each search's
SQL (rag.visibility resolved them, and only those the caller may read). Reciprocal rank fusion
(score = sum of 1 / (60 + rank)) needs no score calibration between the two lists, and a chunk
found by both rises to the top. Both rankings, the fusion, the chunks and what the reranker
scores by are one SQL statement (rag.hybrid): one round trip a question.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.db import OperationalError, connection, transaction

from rag import highlight, hybrid, sql, vector_plan
from rag.models import Chunk
from rag.query import search_text
from rag.ranking import RERANK_TOP, Candidate, bm25, diversify, rescore
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
    # other documents holding this passage word for word ({"document_id", "title", "source", "collection"})
    also_in: list[dict[str, Any]] = field(default_factory=list)
    # [start, end) in ``text`` of its sentence closest to the question (rag.highlight), when known
    highlight: list[int] | None = None

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
            "also_in": [dict(other) for other in self.also_in],
            "highlight": list(self.highlight) if self.highlight else None,
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
            also_in=list(source.get("also_in") or []),
            highlight=source.get("highlight"),
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
            also_in=list(candidate.also_in),
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


QUERY_CANCELED = "57014"  # the SQLSTATE of a statement cancelled by statement_timeout
FULL_TEXT_TIMED_OUT = "full-text search timed out: ranked by meaning alone"


def query_terms(question: str) -> str:
    """The tsquery the full-text ranking ranks by (the question's distinct lexemes, ORed), as text.

    ts_rank_cd rewards the chunks holding more of them, closer together; a question keeps at most
    hybrid.MAX_QUERY_TERMS, its rarest, since a query's cost grows faster than its terms.
    """
    return _fetch(hybrid.query_terms(question), timeout_ms=0)[0][0]


def text_search(collection_ids: Sequence[int], question: str, limit: int) -> list[tuple[int, float]]:
    """(chunk id, rank) of the chunks of the collections that best match the question's words: the
    full-text ranking of the hybrid statement alone (over its bounded pool, rag.hybrid)."""
    statement = hybrid.text_ranking(collection_ids=list(collection_ids), text=question, limit=limit)
    return [(int(row[0]), float(row[1])) for row in _fetch(statement, timeout_ms=0)]


def _fetch(statement: hybrid.Statement, *, timeout_ms: int) -> list[tuple[Any, ...]]:
    """The statement's rows, its SET LOCALs applied to it alone; Postgres cancels it after
    ``timeout_ms`` (0: never).

    Outside a transaction the SETs and the statement go as one string, one round trip: they share
    the implicit transaction Postgres gives a string of several statements. Inside a caller's
    transaction they run in a savepoint, and the timeout is put back after (SET LOCAL would
    outlive the statement there); a cancelled statement rolls the savepoint back, setting and all.
    """
    settings_sql = [f"SET LOCAL statement_timeout = {int(timeout_ms)}", *statement.settings]
    if not connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("; ".join([*settings_sql, statement.sql]), statement.params)
            for _ in settings_sql:
                cursor.nextset()
            return cursor.fetchall()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('statement_timeout')")
        previous = cursor.fetchone()[0]
        for setting in settings_sql:
            cursor.execute(setting)
        cursor.execute(statement.sql, statement.params)
        rows = cursor.fetchall()
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [previous])
        return rows


def fuse(rankings: list[list[int]], k: int) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of several ranked id lists; the best ``k`` (id, score).

    The hybrid statement fuses in SQL (rag.hybrid); this is the same rule, for lists at hand.
    """
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
    """The first stage: the best of each ranking, fused, with their chunks' text and documents, in
    one statement (rag.hybrid).

    ``words`` is what the full-text search looks for (rag.query.search_text of the question).
    """
    return _first_stage(
        collections, question, model_name=model_name, query_vector=query_vector, limit=limit, words=words
    )[0]


def _first_stage(
    collections: CollectionSet,
    question: str,
    *,
    model_name: str | None,
    query_vector: np.ndarray | None,
    limit: int,
    words: str | None,
    for_reranking: bool = False,
    reasons: list[str] | None = None,
) -> tuple[list[Candidate], list[tuple[int, int, str, int]]]:
    """``candidates``, and with ``for_reranking`` what the reranker scores by: the chunk's and its
    sentences' similarity to the question (in the candidates) and the rows of its BM25 of the
    question's words (rag.ranking.bm25), for the first ``RERANK_TOP``.

    The statement runs under ``RAGSITE_RETRIEVAL_TIMEOUT_MS``: past it, it is cancelled (and
    logged) and run again without its full-text ranking, so the answer is ranked by vectors alone
    rather than holding a worker; ``reasons`` then receives why.
    """
    ids = list(collections.ids)
    words = search_text(collections, question) if words is None else words
    has_vector = query_vector is not None and model_name is not None
    plan = vector_plan.choose(ids, model_name) if has_vector else None
    reranking = for_reranking and has_vector

    def statement(text: str | None) -> hybrid.Statement:
        return hybrid.hybrid(
            collection_ids=ids,
            text=text,
            model_name=model_name if has_vector else None,
            vector=query_vector if has_vector else None,
            plan=plan,
            limit=limit,
            fused=2 * limit,
            rrf_k=RRF_K,
            rerank_top=RERANK_TOP if reranking else 0,
            scored_words=words if reranking else None,
        )

    try:
        rows = _fetch(statement(words), timeout_ms=settings.RAGSITE_RETRIEVAL_TIMEOUT_MS)
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != QUERY_CANCELED:
            raise
        logger.warning(
            "full-text search cancelled after %d ms (a question of %d characters): ranking by vectors alone",
            settings.RAGSITE_RETRIEVAL_TIMEOUT_MS,
            len(question),
        )
        if reasons is not None:
            reasons.append(FULL_TEXT_TIMED_OUT)
        rows = _fetch(statement(None), timeout_ms=0) if has_vector else []
    found = []
    scored: list[tuple[int, int, str, int]] = []
    for row in rows:
        chunk_id, document_id, ordinal, heading, text, collection_id, title, source, score, similarity = row[:10]
        sentences, length, held = (json.loads(x) if isinstance(x, str) else x for x in row[10:])
        scored.extend((chunk_id, length, lexeme, int(count)) for lexeme, count in held or [])
        found.append(
            Candidate(
                chunk_id=chunk_id,
                document_id=document_id,
                ordinal=ordinal,
                title=title,
                source=source,
                text=text,
                score=float(score),
                similarity=None if similarity is None else float(similarity),
                heading=heading,
                sentences=[(int(p), t, float(v)) for p, t, v in sentences or []],
                collection=collections.name_of(collection_id),
            )
        )
    return found, scored


def hybrid_search(
    collections: CollectionSet,
    question: str,
    k: int,
    *,
    model_name: str | None = None,
    query_vector: np.ndarray | None = None,
    max_per_document: int | None = None,
    timings: dict[str, float] | None = None,
    reasons: list[str] | None = None,
) -> list[RetrievedChunk]:
    """The ``k`` best sources; full-text only when no query vector is given (degraded mode).

    The candidates do not depend on ``k``, so the first five of ten sources are the five sources.
    ``timings`` receives the milliseconds of each stage: ``search`` (both rankings, fused) and
    ``rerank``; ``reasons`` why the ranking was less than hybrid (the full-text half timed out).
    """
    timings = {} if timings is None else timings
    started = time.perf_counter()
    reranking = query_vector is not None and model_name is not None and settings.RAGSITE_RERANK
    found, scored = _first_stage(
        collections,
        question,
        model_name=model_name,
        query_vector=query_vector,
        limit=max(CANDIDATES, 2 * k),
        words=None,
        for_reranking=reranking,
        reasons=reasons,
    )
    reranked = time.perf_counter()
    timings["search"] = round((reranked - started) * 1000, 2)
    if reranking:
        # What the reranker scores by came with the candidates: no query of its own.
        head = found[:RERANK_TOP]
        found = rescore(
            found,
            {c.chunk_id: c.similarity for c in head if c.similarity is not None},
            {c.chunk_id: c.sentences for c in head if c.sentences},
            bm25(scored, collections=collections),
        )
        timings["rerank"] = round((time.perf_counter() - reranked) * 1000, 2)
    if max_per_document is None:
        max_per_document = settings.RAGSITE_MAX_PER_DOCUMENT
    sources = [RetrievedChunk.from_candidate(c) for c in diversify(found, k, max_per_document=max_per_document)]
    highlight.mark(sources)
    return sources
