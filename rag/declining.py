"""Whether the documents cover a question at all: below the relevance floor, the answer says so.

The signal is the similarity between the question and the best sentence of the best passages
(the reranker computed it: no extra model call). A question whose best sentence is below
``RAGSITE_RELEVANCE_FLOOR`` is declined. Just above it, a question whose words are mostly
unknown to the collection (no chunk holds them: "pandas DataFrame", "smtplib") is declined too,
up to ``RAGSITE_RELEVANCE_FLOOR_UNKNOWN_WORDS``. Both floors were calibrated on the golden set's
tuning half (manage.py evaluate reports the precision and recall of declining).
"""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from django.db import connection

from rag.models import Chunk, Collection
from rag.retrieval import RetrievedChunk

UNKNOWN_SHARE = 0.5


def relevance(chunks: Sequence[RetrievedChunk]) -> float | None:
    """How well the best passage matches the question: its best sentence's similarity (None when
    the passages were not reranked, as in full-text-only answers)."""
    values = [c.relevance for c in chunks if c.relevance is not None]
    return max(values) if values else None


def unknown_share(collection: Collection, question: str) -> float:
    """The share of the question's words (full-text lexemes) that no chunk of the collection holds.

    One GIN index probe a word; asked only for questions near the floor.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM "
            f"{Chunk._meta.db_table} c WHERE c.collection_id = %s AND c.search_vector @@ quote_literal(w)::tsquery)) "
            "FROM unnest(tsvector_to_array(to_tsvector('english', %s))) AS w",
            [collection.pk, question],
        )
        total, unknown = cursor.fetchone()
    return unknown / total if total else 0.0


def covers(chunks: Sequence[RetrievedChunk], *, collection: Collection, question: str) -> bool:
    """False when the documents do not cover the question (see the module docstring). Passages
    that could not be judged (no question vector) are given the benefit of the doubt."""
    best = relevance(chunks)
    if best is None:
        return True
    if best < settings.RAGSITE_RELEVANCE_FLOOR:
        return False
    if best < settings.RAGSITE_RELEVANCE_FLOOR_UNKNOWN_WORDS:
        return unknown_share(collection, question) < UNKNOWN_SHARE
    return True
