"""API throttles that cost one statement a request and are shared by every worker and machine.

DRF's ``SimpleRateThrottle`` keeps each caller's request times in the cache: with the database
cache that is a read, a count, a select and a write in a transaction of their own, on every
request. Here a caller's budget is a sliding window estimated from two fixed windows (the
current one's count plus the previous one's, weighted by how much of it still overlaps), kept in
an unlogged table and updated in one ``INSERT ... ON CONFLICT ... RETURNING`` (a refused request
takes a second statement to give its count back). An unlogged table skips the write-ahead log: a
crash forgets the counts, which only gives callers a fresh window.

A question to ``POST /api/query`` does not run that statement on its own: the view turns the
throttle into a ``Ticket`` and the answer pipeline counts it inside the question's first
statement (rag.first_look), so an exact cache hit, throttle included, is one round trip.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from django.db import connection
from rest_framework import throttling
from rest_framework.request import Request

from rag.models import ThrottleCount

TABLE = ThrottleCount._meta.db_table
# One request in this many also deletes the rows of windows long gone (idle callers).
PRUNE_ONE_IN = 1000

# Parameters: key, window index, seconds to keep the row. Returns (count, previous).
COUNT_SQL = (
    f"INSERT INTO {TABLE} AS t (key, window_index, count, previous, expires_at) "
    "VALUES (%s, %s, 1, 0, now() + make_interval(secs => %s)) "
    "ON CONFLICT (key) DO UPDATE SET "
    "previous = CASE WHEN t.window_index = EXCLUDED.window_index THEN t.previous "
    "WHEN t.window_index = EXCLUDED.window_index - 1 THEN t.count ELSE 0 END, "
    "count = CASE WHEN t.window_index = EXCLUDED.window_index THEN t.count + 1 ELSE 1 END, "
    "window_index = EXCLUDED.window_index, expires_at = EXCLUDED.expires_at "
    "RETURNING count, previous"
)


class Refused(Exception):
    """The caller has spent its budget; ``wait`` is the seconds until a request fits again."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"throttled: retry in {wait:.0f} s")
        self.wait = wait


@dataclass(frozen=True)
class Ticket:
    """One request to count against a caller's budget, by whichever statement runs first."""

    key: str
    window: int  # the index of the fixed window the request falls in
    into: float  # seconds into that window
    duration: int
    limit: int

    def params(self) -> list[object]:
        """``COUNT_SQL``'s parameters."""
        return [self.key, self.window, 2 * self.duration]

    @property
    def overlap(self) -> float:
        """How much of the previous window still weighs."""
        return 1 - self.into / self.duration

    def allows(self, count: int, previous: int) -> bool:
        return previous * self.overlap + count <= self.limit

    def settle(self, count: int, previous: int) -> None:
        """After the count: give a refused request back and raise Refused (rarely, prune)."""
        if random.randrange(PRUNE_ONE_IN) == 0:
            with connection.cursor() as cursor:
                cursor.execute(f"DELETE FROM {TABLE} WHERE expires_at < now()")
        if self.allows(count, previous):
            return
        uncount_request(self.key, window=self.window)
        # Until the previous window's weight has shrunk enough, or this window has ended.
        excess = previous * self.overlap + count - self.limit
        until_fits = excess / previous * self.duration if previous else math.inf
        raise Refused(max(1.0, min(until_fits, self.duration - self.into)))

    def spend(self) -> None:
        """Count the request on its own statement; raises Refused when it is over the budget."""
        self.settle(*count_request(self.key, window=self.window, duration=self.duration))


def uncount_request(key: str, *, window: int) -> None:
    """Take back a refused request: only the requests served use up the budget."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET count = count - 1 WHERE key = %s AND window_index = %s AND count > 0", [key, window]
        )


def count_request(key: str, *, window: int, duration: int) -> tuple[int, int]:
    """Count one request in ``window``; returns (requests in it, requests in the window before)."""
    with connection.cursor() as cursor:
        cursor.execute(COUNT_SQL, [key, window, 2 * duration])
        count, previous = cursor.fetchone()
    return int(count), int(previous)


class WindowThrottle(throttling.SimpleRateThrottle):
    """A rate like "120/minute" per ``get_cache_key`` identity, counted in Postgres."""

    def ticket(self, request: Request, view) -> Ticket | None:
        """This request's ticket, not yet counted; None when no budget applies to it."""
        if self.rate is None:
            return None
        key = self.get_cache_key(request, view)
        if key is None:
            return None
        window, into = divmod(self.timer(), self.duration)
        return Ticket(key, int(window), into, int(self.duration), int(self.num_requests))

    def allow_request(self, request: Request, view) -> bool:
        ticket = self.ticket(request, view)
        if ticket is None:
            return True
        try:
            ticket.spend()
        except Refused as refused:
            self.wait_seconds = refused.wait
            return False
        return True

    def wait(self) -> float | None:
        return getattr(self, "wait_seconds", None)
