"""Every answered question counted and logged: the query log, the cache counters, the metrics.

The row and the count go in the next batch (rag.bookkeeping); the row's id, the answer's
``query_id``, was taken from the table's sequence by the question's first statement
(rag.first_look), so the answer names its row before the row is written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from django.db import connection
from django.utils import timezone

from rag import bookkeeping, metrics, sql
from rag.cache_counters import increment_sql, lookup_counter, safely
from rag.models import CacheOutcome, QueryLog
from rag.text import question_hash

# The expression a statement selects to take the next query log id.
NEXT_ID_SQL = f"nextval(pg_get_serial_sequence('{QueryLog._meta.db_table}', 'id'))"


def asked_before(collection_ids: Sequence[int], question: str) -> bool:
    """Whether the query log holds this question (normalised) asked of these very collections."""
    return safely(
        "query log lookup",
        lambda: QueryLog.objects.filter(
            question_hash=question_hash(question), collection_ids=sorted(collection_ids)
        ).exists(),
        default=False,
    )


def record(
    *,
    question: str,
    collection: str,
    collection_ids: Sequence[int],
    cache: CacheOutcome,
    total_ms: float,
    degraded: bool,
    matched_question: str | None = None,
    answerable: bool = True,
    query_id: int | None = None,
) -> int | None:
    """Log and count one answered question; its log row's id (what feedback names), None when the
    log could not be written. Never raises: a failed log must not fail the answer.

    ``collection`` is the names as shown ("eng,hr"); ``collection_ids`` decide who may see the row.
    With ``query_id`` (taken from the sequence already) the row and the count are written in the
    next batch; without, now.
    """
    metrics.record_query(cache=cache, degraded=degraded, seconds=total_ms / 1000)
    row = (question, collection, sorted(collection_ids), cache, total_ms, degraded, matched_question, answerable)
    if query_id is None:
        return safely("query log", _log, *row, default=None)
    bookkeeping.log(
        bookkeeping.LogRow(
            query_id,
            question,
            question_hash(question),
            collection,
            sorted(collection_ids),
            str(cache),
            total_ms,
            degraded,
            matched_question or "",
            answerable,
            timezone.now(),
        )
    )
    bookkeeping.count({lookup_counter(cache): 1})
    return query_id


def find(query_id: int, rows: Any, *, wait_seconds: float = 3 * bookkeeping.FLUSH_SECONDS) -> Any:
    """The row ``query_id`` of the queryset ``rows`` (None if absent), waiting up to
    ``wait_seconds`` when the id was handed out and its row is not written yet (rag.bookkeeping:
    another process writes it within ``FLUSH_SECONDS``)."""
    bookkeeping.flush()  # this process's own
    deadline = time.monotonic() + wait_seconds
    while True:
        row = rows.filter(pk=query_id).first()
        if row is not None or time.monotonic() >= deadline or not _pending(query_id):
            return row
        time.sleep(0.05)


def _pending(query_id: int) -> bool:
    """Whether the id was handed out and no row has it yet."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT pg_sequence_last_value(pg_get_serial_sequence('{QueryLog._meta.db_table}', 'id')::regclass) >= %s "
            f"AND NOT EXISTS (SELECT 1 FROM {QueryLog._meta.db_table} WHERE id = %s)",
            [query_id, query_id],
        )
        return bool(cursor.fetchone()[0])


def _log(
    question: str,
    collection: str,
    collection_ids: list[int],
    cache: CacheOutcome,
    total_ms: float,
    degraded: bool,
    matched_question: str | None,
    answerable: bool,
) -> int | None:
    # Counted and logged in one round trip, committed lazily (see rag.sql.lazily).
    count_sql, count_params = increment_sql({lookup_counter(cache): 1})
    params: list[Any] = [
        *count_params,
        question,
        question_hash(question),
        collection,
        collection_ids,
        str(cache),
        total_ms,
        degraded,
        matched_question or "",
        answerable,
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            sql.lazily(
                f"{count_sql}; INSERT INTO {QueryLog._meta.db_table} (question, question_hash, collection, "
                "collection_ids, cache, latency_ms, degraded, matched_question, answerable, created_at) "
                "VALUES (%s, %s, %s, %s::bigint[], %s, %s, %s, %s, %s, now()) RETURNING id"
            ),
            params,
        )
        while cursor.description is None and cursor.nextset():
            pass
        row = cursor.fetchone() if cursor.description is not None else None
    return int(row[0]) if row else None
