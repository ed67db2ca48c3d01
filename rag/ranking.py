"""From fused candidates to the sources an answer cites: diverse documents, neighbours merged.

A long document has many chunks that match a question about its subject; left alone they take
every place and push out the one short document that answers it. So a document takes at most
``max_per_document`` of the k places, and a chunk next to a chosen one (the same document, the
ordinal before or after) joins it as one source instead of taking a place of its own.

A passage two documents hold word for word (a chapter quoting its section, a page published
twice) is shown once: the better-ranked copy is the source, and the other documents holding it
are named in its ``also_in`` instead of taking a place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from django.db import connection

from rag import sql
from rag.models import Chunk, Sentence
from rag.query import vocabulary
from rag.text import fold_spaces
from rag.visibility import CollectionSet


@dataclass
class Candidate:
    """A chunk found by the first stage, with what the later stages need to judge it."""

    chunk_id: int
    document_id: int
    ordinal: int
    title: str
    source: str
    text: str
    score: float  # the fused first-stage score, then the reranked one
    similarity: float | None = None  # cosine similarity of the chunk to the question
    heading: str = ""
    merged: list[int] = field(default_factory=list)  # chunk ids merged into this source, in order
    # (position, text, cosine similarity to the question) of the chunk's sentences, when reranked
    sentences: list[tuple[int, str, float]] = field(default_factory=list)
    best_sentence: float | None = None
    collection: str = ""  # the collection's name
    # other documents holding this source's passage word for word:
    # {"document_id", "title", "source", "collection"}
    also_in: list[dict[str, object]] = field(default_factory=list)


def join_texts(first: str, second: str) -> str:
    """Two consecutive chunks as one text: the second starts with the end of the first (the
    chunker's overlap), which is not repeated."""
    head, sep, rest = second.partition("\n\n")
    if sep and first.endswith(head):
        return f"{first}\n\n{rest}"
    return f"{first}\n\n{second}"


def diversify(candidates: list[Candidate], k: int, *, max_per_document: int) -> list[Candidate]:
    """The best ``k`` candidates, at most ``max_per_document`` a document, neighbours merged, each
    passage once.

    ``candidates`` are best first. A chunk adjacent to one already chosen is merged into it
    (once on each side) and takes no place; a chunk whose passage a chosen source already shows
    takes no place either: its document is named in that source's ``also_in`` (every candidate
    is read for those, past the k-th source too).
    """
    by_position = {(c.document_id, c.ordinal): c for c in candidates}
    chosen: list[Candidate] = []
    taken: dict[int, int] = {}
    used: set[int] = set()
    shown: dict[str, Candidate] = {}  # a passage -> the source showing it
    for candidate in candidates:
        if candidate.chunk_id in used:
            continue
        key = fold_spaces(candidate.text)  # the same passage: the same words
        holder = shown.get(key)
        if holder is not None:
            used.add(candidate.chunk_id)
            _also_in(holder, candidate)
            continue
        if len(chosen) >= k:
            continue  # the rest are read only for the documents holding a chosen passage
        if taken.get(candidate.document_id, 0) >= max_per_document:
            continue
        taken[candidate.document_id] = taken.get(candidate.document_id, 0) + 1
        used.add(candidate.chunk_id)
        source = Candidate(**{**candidate.__dict__, "merged": [candidate.chunk_id], "also_in": []})
        shown[key] = source
        for ordinal, before in ((candidate.ordinal - 1, True), (candidate.ordinal + 1, False)):
            neighbour = by_position.get((candidate.document_id, ordinal))
            if neighbour is None or neighbour.chunk_id in used:
                continue
            neighbour_key = fold_spaces(neighbour.text)
            if neighbour_key in shown:
                continue
            used.add(neighbour.chunk_id)
            shown[neighbour_key] = source
            _merge(source, neighbour, before=before)
        chosen.append(source)
    return chosen


def _merge(source: Candidate, neighbour: Candidate, *, before: bool) -> None:
    """Join ``neighbour`` (the chunk just before or just after) to ``source``: text, sentences, ids."""
    first, second = (neighbour, source) if before else (source, neighbour)
    source.text = join_texts(first.text, second.text)
    source.sentences = _renumber(first.sentences + second.sentences)
    source.merged.insert(0 if before else len(source.merged), neighbour.chunk_id)


def _also_in(source: Candidate, duplicate: Candidate) -> None:
    """Name ``duplicate``'s document in ``source``'s ``also_in`` (once, and not its own)."""
    if duplicate.document_id == source.document_id:
        return
    if any(other["document_id"] == duplicate.document_id for other in source.also_in):
        return
    source.also_in.append(
        {
            "document_id": duplicate.document_id,
            "title": duplicate.title,
            "source": duplicate.source,
            "collection": duplicate.collection,
        }
    )


def _renumber(sentences: list[tuple[int, str, float]]) -> list[tuple[int, str, float]]:
    """Sentences of merged chunks in text order, each once (the overlap repeats a few)."""
    seen: set[str] = set()
    out = []
    for _, text, similarity in sentences:
        if text not in seen:
            seen.add(text)
            out.append((len(out), text, similarity))
    return out


# RERANKING
# The first stage ranks whole chunks; a question is usually answered by one sentence, which a
# chunk's single vector blurs with the rest. The chunks' sentences were embedded at ingestion,
# so the reranker costs two queries, no model call: each candidate is scored by its own
# similarity to the question, its best sentence's, and how well its words match the question's
# (BM25, below), normalised by the best candidate's. Every candidate of the first stage is scored
# (25 nearest + 25 best keyword matches at most, for k up to 12): the right chunk is often one that
# only one of the two rankings found, low in it. The weights were chosen on the golden set's tuning
# half; the fused rank's weight came out at 0 once the words were scored (its order only breaks ties
# among candidates past RERANK_TOP).
RERANK_TOP = 50
WEIGHT_FUSED = 0.0
WEIGHT_CHUNK = 1.75
WEIGHT_SENTENCE = 1.0
WEIGHT_WORDS = 0.4
# BM25's usual constants: how fast repeats of a word stop counting, how much a long chunk is discounted.
BM25_K1 = 1.2
BM25_B = 0.75


def similarities(
    chunk_ids: list[int], *, model_name: str, query_vector: np.ndarray
) -> tuple[dict[int, float], dict[int, list[tuple[int, str, float]]]]:
    """Cosine similarity of each chunk, and of each of its sentences, to the question: one query."""
    dims = int(query_vector.shape[0])
    literal = sql.vector_literal(query_vector)
    similarity = f"1 - ((embedding::vector({dims})) <=> %s::vector({dims}))"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, -1, '', {similarity} FROM {Chunk._meta.db_table} "
            "WHERE embedding_model = %s AND id = ANY(%s) "
            f"UNION ALL SELECT chunk_id, position, text, {similarity} FROM {Sentence._meta.db_table} "
            "WHERE embedding_model = %s AND chunk_id = ANY(%s)",
            [literal, model_name, chunk_ids, literal, model_name, chunk_ids],
        )
        rows = cursor.fetchall()
    chunks: dict[int, float] = {}
    sentences: dict[int, list[tuple[int, str, float]]] = {}
    for chunk_id, position, text, value in rows:
        if position < 0:
            chunks[chunk_id] = float(value)
        else:
            sentences.setdefault(chunk_id, []).append((position, text, float(value)))
    for found in sentences.values():
        found.sort()
    return chunks, sentences


def word_scores(chunk_ids: list[int], *, collections: CollectionSet, text: str, max_terms: int) -> dict[int, float]:
    """BM25 of each chunk for the question's words (the lexemes the full-text search looks for).

    The full-text ranking (ts_rank_cd) counts every word alike, so "equivalent" weighs as much as
    "shifting"; BM25 weighs a word by how few chunks of the collections hold it. The counts come
    from the collections' vocabularies (kept per corpus version); the chunks' term frequencies and
    lengths from their full-text vectors, in one query.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH q AS (SELECT lexeme FROM unnest(to_tsvector('english', %s)) AS t(lexeme, positions, weights) "
            "ORDER BY length(lexeme) DESC, positions[1] LIMIT %s) "
            "SELECT c.id, length(c.search_vector), t.lexeme, coalesce(array_length(t.positions, 1), 1) "
            f"FROM {Chunk._meta.db_table} c, unnest(c.search_vector) AS t(lexeme, positions, weights) "
            "WHERE c.id = ANY(%s) AND t.lexeme IN (SELECT lexeme FROM q)",
            [text, max_terms, chunk_ids],
        )
        return bm25(cursor.fetchall(), collections=collections)


def bm25(rows: list[tuple[int, int, str, int]], *, collections: CollectionSet) -> dict[int, float]:
    """``word_scores`` from its rows: (chunk id, distinct lexemes of the chunk, a question lexeme it
    holds, how often), when they came with the candidates (rag.hybrid)."""
    if not rows:
        return {}
    vocabularies = [vocabulary(pk, version) for pk, version in zip(collections.ids, collections.versions, strict=True)]
    total = sum(v.chunks for v in vocabularies) or 1
    mean_length = sum(v.mean_length * v.chunks for v in vocabularies) / total or 1.0
    scores: dict[int, float] = {}
    for chunk_id, length, lexeme, frequency in rows:
        holding = sum(v.chunks_with.get(lexeme, 0) for v in vocabularies)
        rarity = math.log(1 + (total - holding + 0.5) / (holding + 0.5))
        damping = frequency + BM25_K1 * (1 - BM25_B + BM25_B * length / mean_length)
        scores[chunk_id] = scores.get(chunk_id, 0.0) + rarity * frequency * (BM25_K1 + 1) / damping
    return scores


def rerank(
    candidates: list[Candidate],
    *,
    model_name: str,
    query_vector: np.ndarray,
    collections: CollectionSet | None = None,
    text: str = "",
    max_terms: int = 12,
) -> list[Candidate]:
    """The first ``RERANK_TOP`` candidates scored again (see above), best first; the rest follow.

    Without ``collections`` (or ``text``) the words are not scored.
    """
    head = candidates[:RERANK_TOP]
    if not head:
        return candidates
    ids = [c.chunk_id for c in head]
    chunk_similarity, sentences = similarities(ids, model_name=model_name, query_vector=query_vector)
    words = word_scores(ids, collections=collections, text=text, max_terms=max_terms) if collections and text else {}
    return rescore(candidates, chunk_similarity, sentences, words)


def rescore(
    candidates: list[Candidate],
    chunk_similarity: dict[int, float],
    sentences: dict[int, list[tuple[int, str, float]]],
    words: dict[int, float],
) -> list[Candidate]:
    """``rerank`` given what it scores by (``similarities``' two dicts, ``word_scores``), when they
    came with the candidates."""
    head, tail = candidates[:RERANK_TOP], candidates[RERANK_TOP:]
    if not head:
        return candidates
    top_fused = max(c.score for c in head) or 1.0
    top_words = max(words.values(), default=0.0) or 1.0
    for candidate in head:
        candidate.similarity = chunk_similarity.get(candidate.chunk_id, candidate.similarity or 0.0)
        candidate.sentences = sentences.get(candidate.chunk_id, [])
        candidate.best_sentence = max((s[2] for s in candidate.sentences), default=candidate.similarity)
        candidate.score = (
            WEIGHT_FUSED * candidate.score / top_fused
            + WEIGHT_CHUNK * candidate.similarity
            + WEIGHT_SENTENCE * candidate.best_sentence
            + WEIGHT_WORDS * words.get(candidate.chunk_id, 0.0) / top_words
        )
    floor = min(c.score for c in head)
    for candidate in tail:  # below every reranked one, in their first-stage order
        candidate.score = floor - 1e-6 * (1 + tail.index(candidate))
    return sorted(head, key=lambda c: (-c.score, c.chunk_id)) + tail
