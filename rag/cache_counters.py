"""The answer cache's event counts and figures, shared by every worker, and its error policy.

Every cache function that a query calls swallows database errors through ``safely``: they are
logged and counted, and the query is answered uncached.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import DatabaseError, connection

from rag import sql
from rag.bookkeeping import increment_sql, ledger
from rag.models import CacheCounter, CachedAnswer, CacheOutcome
from resilience import config
from resilience.db import savepoint

logger = logging.getLogger("rag.answer_cache")

COUNTERS = CacheCounter._meta.db_table

T = TypeVar("T")

_lock = threading.Lock()
_unrecorded_errors = 0  # errors that could not be counted in the database either


def safely(what: str, fn: Callable[..., T], *args: Any, default: T) -> T:
    """Run ``fn`` (in a savepoint when in a transaction); on failure log, count and return ``default``."""
    try:
        with savepoint():
            return fn(*args)
    except Exception as exc:
        # A database error is expected here (a broken table, a lost connection); anything else is
        # a bug worth its traceback.
        logger.warning("semantic cache: %s failed: %s", what, exc, exc_info=not isinstance(exc, DatabaseError))
        record_error()
        return default


def increment(counts: dict[str, int]) -> None:
    if not any(counts.values()):
        return
    statement, params = increment_sql(counts)
    with connection.cursor() as cursor:
        cursor.execute(sql.lazily(statement), params)


def count(**counts: int) -> None:
    """Add to the shared counters (``count(misses=1)``), in the next batch (rag.bookkeeping);
    never raises."""
    ledger.count(counts)


def record_error() -> None:
    global _unrecorded_errors
    try:
        with savepoint():
            increment({"errors": 1})
    except Exception:
        with _lock:
            _unrecorded_errors += 1


def lookup_counter(outcome: CacheOutcome) -> str:
    """The counter of a query's cache outcome."""
    return {
        CacheOutcome.EXACT: "exact_hits",
        CacheOutcome.SEMANTIC: "semantic_hits",
        CacheOutcome.MISS: "misses",
    }.get(outcome, "bypasses")


def stats() -> dict[str, Any]:
    """The cache's figures across all workers (the metrics endpoint exports them).

    Raises DatabaseError when the tables cannot be read: zeros would look like counter resets.
    """
    cfg = config.current().cache
    counters = {"errors": 0, **dict(CacheCounter.objects.values_list("name", "value"))}
    size = CachedAnswer.objects.count()
    exact, semantic = counters.get("exact_hits", 0), counters.get("semantic_hits", 0)
    hits, misses = exact + semantic, counters.get("misses", 0)
    return {
        "enabled": cfg.enabled,
        "hits": hits,
        "exact_hits": exact,
        "semantic_hits": semantic,
        "misses": misses,
        "bypasses": counters.get("bypasses", 0),
        "hit_rate": round(hits / (hits + misses), 4) if hits + misses else 0.0,
        "size": size,
        "max_size": cfg.max_entries,
        "fill_ratio": round(size / cfg.max_entries, 4) if cfg.max_entries else 0.0,
        "evictions": counters.get("evictions", 0),
        "expirations": counters.get("expirations", 0),
        "invalidations": counters.get("invalidations", 0),
        "stale_served": counters.get("stale_served", 0),
        "unadmitted": counters.get("unadmitted", 0),
        "errors": counters["errors"] + _unrecorded_errors,
        "ttl_seconds": cfg.ttl_seconds,
        "serve_stale_seconds": cfg.serve_stale_seconds,
        "threshold": cfg.similarity_threshold,
    }
