"""What a bench takes back after it ran against the database `make run` leaves."""

from __future__ import annotations

from typing import Any

from rag import cache_counters
from rag.models import CacheCounter


def counters() -> dict[str, int]:
    """The shared cache counters now, to take the bench's own counts back afterwards."""
    return dict(CacheCounter.objects.values_list("name", "value"))


def take_back_counters(cursor: Any, before: dict[str, int]) -> None:
    """Subtract what the bench counted since ``before``, so the operator's figures stay theirs."""
    for name, value in CacheCounter.objects.values_list("name", "value"):
        delta = value - before.get(name, 0)
        if delta:
            cursor.execute(f"UPDATE {cache_counters.COUNTERS} SET value = value - %s WHERE name = %s", [delta, name])


def drop_orphan_usage(cursor: Any) -> None:
    """Usage rows of cached answers the bench deleted."""
    cursor.execute(
        "DELETE FROM resilience_cachedanswerusage u WHERE NOT EXISTS "
        "(SELECT 1 FROM resilience_cachedanswer a WHERE a.id = u.entry_id)"
    )
