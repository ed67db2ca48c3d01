"""From fused candidates to the sources an answer cites: diverse documents, neighbours merged.

A long document has many chunks that match a question about its subject; left alone they take
every place and push out the one short document that answers it. So a document takes at most
``max_per_document`` of the k places, and a chunk next to a chosen one (the same document, the
ordinal before or after) joins it as one source instead of taking a place of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from django.db import connection

from rag import sql
from rag.models import Chunk, Sentence


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


def join_texts(first: str, second: str) -> str:
    """Two consecutive chunks as one text: the second starts with the end of the first (the
    chunker's overlap), which is not repeated."""
    head, sep, rest = second.partition("\n\n")
    if sep and first.endswith(head):
        return f"{first}\n\n{rest}"
    return f"{first}\n\n{second}"


def diversify(candidates: list[Candidate], k: int, *, max_per_document: int) -> list[Candidate]:
    """The best ``k`` candidates, at most ``max_per_document`` a document, neighbours merged.

    ``candidates`` are best first. A chunk adjacent to one already chosen is merged into it
    (once on each side) and takes no place.
    """
    by_position = {(c.document_id, c.ordinal): c for c in candidates}
    chosen: list[Candidate] = []
    taken: dict[int, int] = {}
    used: set[int] = set()
    for candidate in candidates:
        if len(chosen) >= k:
            break
        if candidate.chunk_id in used or taken.get(candidate.document_id, 0) >= max_per_document:
            continue
        taken[candidate.document_id] = taken.get(candidate.document_id, 0) + 1
        used.add(candidate.chunk_id)
        source = Candidate(**{**candidate.__dict__, "merged": [candidate.chunk_id]})
        before = by_position.get((candidate.document_id, candidate.ordinal - 1))
        if before is not None and before.chunk_id not in used:
            used.add(before.chunk_id)
            source.text = join_texts(before.text, source.text)
            source.merged.insert(0, before.chunk_id)
            source.sentences = _renumber(before.sentences + source.sentences)
        after = by_position.get((candidate.document_id, candidate.ordinal + 1))
        if after is not None and after.chunk_id not in used:
            used.add(after.chunk_id)
            source.text = join_texts(source.text, after.text)
            source.merged.append(after.chunk_id)
            source.sentences = _renumber(source.sentences + after.sentences)
        chosen.append(source)
    return chosen


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
# so the reranker costs one query, no model call: each candidate is scored by its fused rank, its
# own similarity and its best sentence's. The weights were chosen on the golden set's tuning half.
RERANK_TOP = 20
WEIGHT_FUSED = 0.2
WEIGHT_CHUNK = 0.5
WEIGHT_SENTENCE = 1.0


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


def rerank(candidates: list[Candidate], *, model_name: str, query_vector: np.ndarray) -> list[Candidate]:
    """The first ``RERANK_TOP`` candidates scored again (see above), best first; the rest follow."""
    head, tail = candidates[:RERANK_TOP], candidates[RERANK_TOP:]
    if not head:
        return candidates
    chunk_similarity, sentences = similarities(
        [c.chunk_id for c in head], model_name=model_name, query_vector=query_vector
    )
    top_fused = max(c.score for c in head) or 1.0
    for candidate in head:
        candidate.similarity = chunk_similarity.get(candidate.chunk_id, candidate.similarity or 0.0)
        candidate.sentences = sentences.get(candidate.chunk_id, [])
        candidate.best_sentence = max((s[2] for s in candidate.sentences), default=candidate.similarity)
        candidate.score = (
            WEIGHT_FUSED * candidate.score / top_fused
            + WEIGHT_CHUNK * candidate.similarity
            + WEIGHT_SENTENCE * candidate.best_sentence
        )
    floor = min(c.score for c in head)
    for candidate in tail:  # below every reranked one, in their first-stage order
        candidate.score = floor - 1e-6 * (1 + tail.index(candidate))
    return sorted(head, key=lambda c: (-c.score, c.chunk_id)) + tail
