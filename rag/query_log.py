"""Every answered question counted and logged: the query log, the cache counters, the metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection

from rag import metrics, sql
from rag.cache_counters import increment_sql, lookup_counter, safely
from rag.models import CacheOutcome, QueryLog
from rag.text import question_hash


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
) -> int | None:
    """Log and count one answered question; its log row's id (what feedback names), None when the
    log could not be written. Never raises: a failed log must not fail the answer.

    ``collection`` is the names as shown ("eng,hr"); ``collection_ids`` decide who may see the row.
    """
    row = (question, collection, sorted(collection_ids), cache, total_ms, degraded, matched_question, answerable)
    query_id = safely("query log", _log, *row, default=None)
    metrics.record_query(cache=cache, degraded=degraded, seconds=total_ms / 1000)
    return query_id


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
    # Counted and logged in one round trip, committed lazily (see rag.sql.lazily): this runs on
    # every cache hit.
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
