"""Whether the documents cover a question at all: below the relevance floor, the answer says so.

The signal is the similarity between the question and the best sentence of the best passages
(the reranker computed it: no extra model call). A question whose best sentence is below the
floor (0.44) is declined. Just above it (up to 0.47), a question whose words are mostly unknown to
the collection (no chunk holds them: "pandas DataFrame", "smtplib") is declined too. Both floors
were calibrated on the golden set's tuning half for the local model's vectors
(``RAGSITE_RELEVANCE_FLOORS``; ``RAGSITE_RELEVANCE_FLOOR`` and ``_UNKNOWN_WORDS`` set them for any
model); manage.py evaluate reports the precision and recall of declining.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from django.db import connection

from rag.models import Chunk
from rag.retrieval import RetrievedChunk

UNKNOWN_SHARE = 0.5


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


def floors(model_name: str) -> tuple[float, float] | None:
    """(floor, floor with unknown words) for this embedding model's vectors, None when not set."""
    table = settings.RAGSITE_RELEVANCE_FLOORS
    return table.get("*") or table.get(model_name)


def covers(chunks: Sequence[RetrievedChunk], *, collection_ids: Sequence[int], question: str, model_name: str) -> bool:
    """False when the documents do not cover the question (see the module docstring). Passages
    that could not be judged (no question vector, no floors for the model) get the benefit of the doubt."""
    best = relevance(chunks)
    limits = floors(model_name)
    if best is None or limits is None:
        return True
    floor, floor_unknown_words = limits
    if best < floor:
        return False
    if best < floor_unknown_words:
        return unknown_share(collection_ids, question) < UNKNOWN_SHARE
    return True
