"""API throttles that cost one statement a request and are shared by every worker and machine.

DRF's ``SimpleRateThrottle`` keeps each caller's request times in the cache: with the database
cache that is a read, a count, a select and a write in a transaction of their own, on every
request. Here a caller's budget is a sliding window estimated from two fixed windows (the
current one's count plus the previous one's, weighted by how much of it still overlaps), kept in
an unlogged table and updated in one ``INSERT ... ON CONFLICT ... RETURNING`` (a refused request
takes a second statement to give its count back). An unlogged table
skips the write-ahead log: a crash forgets the counts, which only gives callers a fresh window.
"""

from __future__ import annotations

import math
import random

from django.db import connection
from rest_framework import throttling
from rest_framework.request import Request

from rag.models import ThrottleCount

TABLE = ThrottleCount._meta.db_table
# One request in this many also deletes the rows of windows long gone (idle callers).
PRUNE_ONE_IN = 1000

_HIT = (
    f"INSERT INTO {TABLE} AS t (key, window_index, count, previous, expires_at) "
    "VALUES (%(key)s, %(window)s, 1, 0, now() + make_interval(secs => %(keep)s)) "
    "ON CONFLICT (key) DO UPDATE SET "
    "previous = CASE WHEN t.window_index = EXCLUDED.window_index THEN t.previous "
    "WHEN t.window_index = EXCLUDED.window_index - 1 THEN t.count ELSE 0 END, "
    "count = CASE WHEN t.window_index = EXCLUDED.window_index THEN t.count + 1 ELSE 1 END, "
    "window_index = EXCLUDED.window_index, expires_at = EXCLUDED.expires_at "
    "RETURNING count, previous"
)


def uncount_request(key: str, *, window: int) -> None:
    """Take back a refused request: only the requests served use up the budget."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET count = count - 1 WHERE key = %s AND window_index = %s AND count > 0", [key, window]
        )


def count_request(key: str, *, window: int, duration: int) -> tuple[int, int]:
    """Count one request in ``window``; returns (requests in it, requests in the window before)."""
    with connection.cursor() as cursor:
        cursor.execute(_HIT, {"key": key, "window": window, "keep": 2 * duration})
        count, previous = cursor.fetchone()
        if random.randrange(PRUNE_ONE_IN) == 0:
            cursor.execute(f"DELETE FROM {TABLE} WHERE expires_at < now()")
    return int(count), int(previous)


class WindowThrottle(throttling.SimpleRateThrottle):
    """A rate like "120/minute" per ``get_cache_key`` identity, counted in Postgres."""

    def allow_request(self, request: Request, view) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        now = self.timer()
        window, into = divmod(now, self.duration)
        count, previous = count_request(self.key, window=int(window), duration=int(self.duration))
        overlap = 1 - into / self.duration
        if previous * overlap + count <= self.num_requests:
            return True
        uncount_request(self.key, window=int(window))
        # Until the previous window's weight has shrunk enough, or this window has ended.
        excess = previous * overlap + count - self.num_requests
        until_fits = excess / previous * self.duration if previous else math.inf
        self.wait_seconds = max(1.0, min(until_fits, self.duration - into))
        return False

    def wait(self) -> float | None:
        return getattr(self, "wait_seconds", None)
