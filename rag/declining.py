"""Whether the documents cover a question at all: below the relevance floor, the answer says so.

The signal is the similarity between the question and the best sentence of the best passages
(the reranker computed it: no extra model call). Below the upper floor, the sentence of the
collections closest to the question is looked for as well (it may sit in a chunk that was not
among the sources), and the closer of the two decides. A question whose best sentence is below
the floor (0.44) is declined. Just above it (up to 0.47), a question whose words are mostly
unknown to the collection (no chunk holds them: "pandas DataFrame", "smtplib") is declined too.
Both floors were calibrated on the golden set's tuning half for the local model's vectors
(``RAGSITE_RELEVANCE_FLOORS``; ``RAGSITE_RELEVANCE_FLOOR`` and ``_UNKNOWN_WORDS`` set them for any
model; manage.py calibrate chooses them from a golden set); manage.py evaluate reports the precision
and recall of declining.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from django.conf import settings
from django.db import connection

from rag import sql
from rag.models import Chunk, Sentence
from rag.query import vocabulary
from rag.retrieval import RetrievedChunk
from rag.visibility import CollectionSet

UNKNOWN_SHARE = 0.5
# The nearest sentence is found by an exact scan (sentences have no vector index), only for
# questions below the upper floor: up to this many chunks (about four sentences each; the demo
# corpus's 3,135 sentences take 12 ms p50 on a busy 2-core machine); past it the sources'
# sentences judge alone.
NEAREST_SENTENCE_MAX_CHUNKS = 2000


def relevance(chunks: Sequence[RetrievedChunk]) -> float | None:
    """How well the best passage matches the question: its best sentence's similarity (None when
    the passages were not reranked, as in full-text-only answers)."""
    values = [c.relevance for c in chunks if c.relevance is not None]
    return max(values) if values else None


def unknown_share(collection_ids: Sequence[int], question: str) -> float:
    """The share of the question's words (full-text lexemes) that no chunk of the collections holds.

    One GIN index probe a word; asked only for questions near the floor.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM "
            f"{Chunk._meta.db_table} c WHERE c.collection_id = ANY(%s) "
            "AND c.search_vector @@ quote_literal(w)::tsquery)) "
            "FROM unnest(tsvector_to_array(to_tsvector('english', %s))) AS w",
            [list(collection_ids), question],
        )
        total, unknown = cursor.fetchone()
    return unknown / total if total else 0.0


def nearest_sentence(collections: CollectionSet, *, model_name: str, query_vector: np.ndarray) -> float | None:
    """The similarity to the question of the collections' closest sentence; None when they are too
    large for an exact scan (``NEAREST_SENTENCE_MAX_CHUNKS``) or hold no sentence of this model."""
    chunks = sum(
        vocabulary(pk, version).chunks for pk, version in zip(collections.ids, collections.versions, strict=True)
    )
    if chunks > NEAREST_SENTENCE_MAX_CHUNKS:
        return None
    dims = int(query_vector.shape[0])
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 - min((s.embedding::vector({dims})) <=> %s::vector({dims})) FROM {Sentence._meta.db_table} s "
            f"JOIN {Chunk._meta.db_table} c ON c.id = s.chunk_id "
            "WHERE c.collection_id = ANY(%s) AND s.embedding_model = %s",
            [sql.vector_literal(query_vector), list(collections.ids), model_name],
        )
        found = cursor.fetchone()[0]
    return float(found) if found is not None else None


def floors(model_name: str) -> tuple[float, float] | None:
    """(floor, floor with unknown words) for this embedding model's vectors, None when not set."""
    table = settings.RAGSITE_RELEVANCE_FLOORS
    return table.get("*") or table.get(model_name)


def covers(
    chunks: Sequence[RetrievedChunk],
    *,
    collections: CollectionSet,
    question: str,
    model_name: str,
    query_vector: np.ndarray | None = None,
) -> bool:
    """False when the documents do not cover the question (see the module docstring). Passages
    that could not be judged (no question vector, no floors for the model) get the benefit of the doubt."""
    best = relevance(chunks)
    limits = floors(model_name)
    if best is None or limits is None:
        return True
    floor, floor_unknown_words = limits
    if best < max(floor, floor_unknown_words) and query_vector is not None:
        nearest = nearest_sentence(collections, model_name=model_name, query_vector=query_vector)
        best = max(best, nearest if nearest is not None else best)
    return not below_floors(
        best, lambda: unknown_share(collections.ids, question), floor=floor, floor_unknown_words=floor_unknown_words
    )


def below_floors(similarity: float, unknown: Callable[[], float], *, floor: float, floor_unknown_words: float) -> bool:
    """The rule itself: a closest sentence below ``floor``, or below ``floor_unknown_words`` for a
    question most of whose words no chunk holds (``unknown()``, asked only then)."""
    if similarity < floor:
        return True
    if similarity < floor_unknown_words:
        return unknown() >= UNKNOWN_SHARE
    return False
