"""Hit counts, the cache counters and the query log, written in batches off the request.

A cache hit used to write three things before it answered: the entry's hit count (the LRU order),
the shared hit counter and the query log row. Each process now keeps them in memory and one
background thread writes what has gathered every ``FLUSH_SECONDS`` (0.5 s), in one transaction:
a few statements for hundreds of answers, and no row lock that every hit of a popular answer, or
every hit at all (the counter), queues on.

What this costs: the writes reach the database up to ``FLUSH_SECONDS`` late (feedback on an
answer waits for its log row, rag.feedback), and a process that dies without a graceful shutdown
(SIGKILL, a lost machine, out of memory) loses what it had not written yet: at most the last
``FLUSH_SECONDS`` of its hit counts, counters and query log. A graceful stop (SIGTERM, the end of
a command) writes them out: gunicorn's ``worker_exit`` hook and ``atexit`` both flush. While the
database cannot be written the rows wait, up to ``MAX_PENDING`` log rows; beyond that the oldest
are dropped and the loss logged.

Inside a transaction (a caller's ``atomic`` block, every test) nothing is deferred: the rows are
written at once on the caller's connection, so its commit or rollback decides, as before. The one
exception is a transaction the answer pipeline opens for itself (``deferred``: the single-flight
lock around a miss), whose bookkeeping would otherwise ride in it.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from datetime import datetime
from typing import Any

from django.db import DatabaseError, connection

from rag.models import CacheCounter, CachedAnswerUsage, QueryLog
from rag.sql import lazy_commit
from resilience.db import savepoint

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5
MAX_PENDING = 50_000

USAGE = CachedAnswerUsage._meta.db_table
LOG = QueryLog._meta.db_table
COUNTERS = CacheCounter._meta.db_table


def increment_sql(counts: dict[str, int]) -> tuple[str, list[Any]]:
    """The statement adding ``counts`` to the shared counters, to run alone or with others."""
    items = sorted((name, n) for name, n in counts.items() if n)  # one lock order: no deadlocks
    values = ", ".join(["(%s, %s)"] * len(items))
    statement = (
        f"INSERT INTO {COUNTERS} (name, value) VALUES {values} "
        f"ON CONFLICT (name) DO UPDATE SET value = {COUNTERS}.value + EXCLUDED.value"
    )
    return statement, [x for item in items for x in item]


@dataclass(frozen=True)
class LogRow:
    """One query log row, its id taken from the table's sequence when the question came in."""

    id: int
    question: str
    question_hash: str
    collection: str
    collection_ids: list[int]
    cache: str
    latency_ms: float
    degraded: bool
    matched_question: str
    answerable: bool
    created_at: datetime


_LOG_COLUMNS = (
    "id, question, question_hash, collection, collection_ids, cache, latency_ms, degraded, matched_question, "
    "answerable, created_at"
)
_LOG_VALUES = "(%s, %s, %s, %s, %s::bigint[], %s, %s, %s, %s, %s, %s)"


_local = threading.local()


@contextmanager
def deferred(on: bool = True) -> Iterator[None]:
    """Within the block, this thread's bookkeeping goes in the next batch even inside a transaction
    (one the caller opened for itself, whose commit the bookkeeping need not wait for)."""
    before = getattr(_local, "deferred", False)
    _local.deferred = on or before
    try:
        yield
    finally:
        _local.deferred = before


class Ledger:
    """This process's bookkeeping not yet written; ``flush`` writes it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._hits: dict[int, list[Any]] = {}  # entry id -> [hits, last hit at]
        self._counts: Counter[str] = Counter()
        self._logs: list[LogRow] = []
        self._thread: threading.Thread | None = None
        self._owner = 0  # the process that started the thread (a fork starts its own)

    # -- recording ---------------------------------------------------------------------------------

    def hit(self, entry_id: int, at: datetime) -> None:
        self._record(hits={entry_id: (1, at)})

    def count(self, counts: dict[str, int]) -> None:
        counts = {name: n for name, n in counts.items() if n}
        if counts:
            self._record(counts=counts)

    def log(self, row: LogRow) -> None:
        self._record(logs=[row])

    def _record(self, **rows: Any) -> None:
        if not connection.in_atomic_block or getattr(_local, "deferred", False):
            self._add(**rows)
            self._ensure_thread()
            return
        # In a transaction, the caller's commit decides: written now, on its connection.
        try:
            with savepoint():
                _write(
                    {k: list(v) for k, v in rows.get("hits", {}).items()},
                    Counter(rows.get("counts", {})),
                    list(rows.get("logs", [])),
                )
        except Exception as exc:
            logger.warning("bookkeeping: %s", exc, exc_info=not isinstance(exc, DatabaseError))

    def _add(
        self,
        *,
        hits: dict[int, tuple[int, datetime]] | None = None,
        counts: dict[str, int] | None = None,
        logs: Sequence[LogRow] = (),
    ) -> None:
        with self._lock:
            for entry_id, (n, at) in (hits or {}).items():
                seen = self._hits.setdefault(entry_id, [0, at])
                seen[0] += n
                seen[1] = max(seen[1], at)
            self._counts.update(counts or {})
            self._logs.extend(logs)
            if len(self._logs) > MAX_PENDING:
                dropped = len(self._logs) - MAX_PENDING
                del self._logs[:dropped]
                logger.error("bookkeeping: %d query log rows dropped: the database has not been writable", dropped)

    def pending(self) -> int:
        with self._lock:
            return len(self._hits) + len(self._counts) + len(self._logs)

    # -- writing -----------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write everything recorded so far (in this process). Raises DatabaseError when the rows
        could not be written; they are kept for the next flush."""
        with self._flushing:
            with self._lock:
                hits, counts, logs = self._hits, self._counts, self._logs
                self._hits, self._counts, self._logs = {}, Counter(), []
            if not (hits or counts or logs):
                return
            try:
                _write(hits, counts, logs)
            except Exception:
                self._add(hits={k: (v[0], v[1]) for k, v in hits.items()}, counts=counts, logs=logs)
                raise

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._owner == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._owner == os.getpid():
                return
            self._owner = os.getpid()
            self._thread = threading.Thread(target=self._run, name="ragsite-bookkeeping", daemon=True)
            self._thread.start()
        atexit.register(self.flush_quietly)

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            if self.pending():
                self.flush_quietly()
                # Connected only while writing: an idle process holds no connection for this.
                connection.close()

    def flush_quietly(self) -> None:
        """``flush``, logging a failure instead of raising it (the thread, shutdown hooks)."""
        try:
            self.flush()
        except Exception as exc:
            logger.warning(
                "bookkeeping: could not write hit counts and the query log (kept for the next try): %s",
                exc,
                exc_info=not isinstance(exc, DatabaseError),
            )
            if not connection.in_atomic_block:
                connection.close()  # a broken connection is opened afresh next time


def _write(hits: dict[int, list[Any]], counts: Counter[str], logs: list[LogRow]) -> None:
    with lazy_commit(), connection.cursor() as cursor:
        if hits:
            ordered = sorted(hits.items())  # one lock order across processes: no deadlocks
            cursor.execute(
                f"INSERT INTO {USAGE} (entry_id, hits, last_hit_at) VALUES "
                + ", ".join(["(%s, %s, %s)"] * len(ordered))
                + f" ON CONFLICT (entry_id) DO UPDATE SET hits = {USAGE}.hits + EXCLUDED.hits, "
                f"last_hit_at = GREATEST({USAGE}.last_hit_at, EXCLUDED.last_hit_at)",
                [x for entry_id, (n, at) in ordered for x in (entry_id, n, at)],
            )
        if any(counts.values()):
            statement, params = increment_sql(dict(counts))
            cursor.execute(statement, params)
        if logs:
            cursor.execute(
                f"INSERT INTO {LOG} ({_LOG_COLUMNS}) VALUES " + ", ".join([_LOG_VALUES] * len(logs)),
                [x for row in logs for x in astuple(row)],
            )


ledger = Ledger()
hit = ledger.hit
count = ledger.count
log = ledger.log
flush = ledger.flush_quietly
