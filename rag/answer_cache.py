"""The semantic answer cache, in Postgres.

Answers are cached per *scope*: the exact set of collections the answer was built from and their
corpus versions, embedding model, generation backend and model, prompt version and k. An entry is
served only to a caller who may read every one of its collections (the exact lookup checks it in
its own statement, the question's first, rag.first_look; the others get a scope built from what
the caller may read). A lookup tries:

1. exact: the hash of the normalised question (case, whitespace, trailing punctuation), no
   embedding needed;
2. semantic: the nearest cached question of the same scope by cosine similarity (pgvector HNSW,
   the scope inside the SQL ``WHERE``), accepted at ``similarity_threshold`` and only if the two
   questions do not differ in a negation, a number or a content word (``rag.near_miss``).

Entries are fresh for ``ttl_seconds`` from creation (a hit does not extend it). An expired entry
is kept ``serve_stale_seconds`` longer for one purpose: answering, marked stale, while generation
is down. ``max_entries`` bounds the table; the least recently used entries go first. Counters live
in a table so every worker process sees the same figures.

Every function that a query calls here swallows database errors: they are logged and counted,
and the query is answered uncached. Inside a caller's transaction each runs in a savepoint, so a
failed cache query never poisons it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.db import connection, transaction

from rag import bookkeeping, sql
from rag.cache_counters import increment, safely
from rag.generation import PROMPT_VERSION
from rag.models import (
    ANSWER_HNSW_EF_CONSTRUCTION,
    ANSWER_HNSW_M,
    DEFAULT_DIMENSIONS,
    DEFAULT_MODEL,
    CachedAnswer,
    CachedAnswerUsage,
    CacheOutcome,
    Collection,
)
from rag.near_miss import near_miss_reason
from rag.text import question_hash
from rag.visibility import CollectionSet
from resilience import config

logger = logging.getLogger(__name__)

# The clock entries are stamped and judged by; tests swap it to expire entries without sleeping.
timer: Callable[[], float] = time.time

# Candidates the HNSW scan yields before the scope filter applies (pgvector 0.6 has no iterative
# scans). 100 keeps a scope that is a few per cent of the table found by the index; a smaller
# scope comes back empty and is then scanned exactly, which is cheap because it is small.
EF_SEARCH = 100
# Nearest entries examined per semantic lookup: the nearest may fail the near-miss guard while the
# second passes it.
CANDIDATES = 5

ANSWERS = CachedAnswer._meta.db_table
USAGE = CachedAnswerUsage._meta.db_table
COLLECTIONS = Collection._meta.db_table
_UNIQUE = "cachedanswer_unique_question"
_SCOPE_SQL = (
    "embedding_model = %s AND collection_ids = %s::bigint[] AND corpus_versions = %s::bigint[] "
    "AND generation = %s AND prompt_version = %s AND k = %s"
)


def now() -> datetime:
    return datetime.fromtimestamp(timer(), tz=UTC)


# SCOPE AND HITS


@dataclass(frozen=True)
class Scope:
    collection_ids: tuple[int, ...]  # sorted
    corpus_versions: tuple[int, ...]  # aligned with the ids
    embedding_model: str
    generation: str
    prompt_version: str
    k: int

    @classmethod
    def for_query(cls, collections: CollectionSet, *, embedding_model: str, k: int) -> Scope:
        return cls(collections.ids, collections.versions, embedding_model, generation_key(), PROMPT_VERSION, k)

    def params(self) -> list[Any]:
        return [
            self.embedding_model,
            list(self.collection_ids),
            list(self.corpus_versions),
            self.generation,
            self.prompt_version,
            self.k,
        ]


def generation_key() -> str:
    """What writes answers now: 'extractive' or 'ollama/<model>'."""
    provider = config.current().provider
    return f"ollama/{provider.generation_model}" if provider.generation_backend == "ollama" else "extractive"


@dataclass
class Hit:
    kind: CacheOutcome  # exact or semantic
    question: str  # the cached question, as first asked
    answer: str
    sources: list[dict[str, Any]]
    generator: str
    created_at: datetime
    similarity: float | None = None
    stale: bool = False
    # Lookups by name only: the collections the names resolved to (names sorted, ids sorted).
    collections: tuple[str, ...] = ()
    collection_ids: tuple[int, ...] = ()
    entry_id: int | None = None


def to_hit(kind: CacheOutcome, row: Sequence[Any], similarity: float | None, fresh_after: datetime) -> Hit:
    question, answer, sources, generator, created_at, *resolved = row
    if isinstance(sources, str):
        sources = json.loads(sources)
    names, ids = resolved or ((), ())
    stale = created_at <= fresh_after
    return Hit(kind, question, answer, sources, generator, created_at, similarity, stale, tuple(names), tuple(ids))


def _hit_sql(where: str, *, scope: str = "", extra: str = "") -> str:
    """Select an entry and count the hit on it, in one round trip.

    The hit is recorded in the usage table, never on the entry: see CachedAnswerUsage. ``scope``
    adds a first CTE the ``where`` may join (as ``scope``), ``extra`` columns to return.
    """
    tables = f"{ANSWERS} a, scope" if scope else f"{ANSWERS} a"
    return (
        f"WITH {scope}hit AS (SELECT a.id, a.question, a.answer, a.sources, a.generator, a.created_at{extra} "
        f"FROM {tables} WHERE {where}), "
        f"used AS (INSERT INTO {USAGE} (entry_id, hits, last_hit_at) SELECT id, 1, %s FROM hit "
        f"ON CONFLICT (entry_id) DO UPDATE SET hits = {USAGE}.hits + 1, last_hit_at = EXCLUDED.last_hit_at) "
        f"SELECT question, answer, sources, generator, created_at{extra.replace('scope.', '')} FROM hit"
    )


_EXACT_SQL = _hit_sql(f"{_SCOPE_SQL} AND question_hash = %s AND created_at > %s")


def cutoffs() -> tuple[datetime, datetime, datetime]:
    """(now, fresh after, servable-stale after)."""
    cfg = config.current().cache
    current = now()
    fresh_after = current - timedelta(seconds=cfg.ttl_seconds)
    return current, fresh_after, fresh_after - timedelta(seconds=cfg.serve_stale_seconds)


def _exact(scope: Scope, question: str, valid_after: datetime, current: datetime, fresh_after: datetime) -> Hit | None:
    with connection.cursor() as cursor:
        cursor.execute(sql.lazily(_EXACT_SQL), [*scope.params(), question_hash(question), valid_after, current])
        row = cursor.fetchone()
    return to_hit(CacheOutcome.EXACT, row, None, fresh_after) if row else None


def lookup_exact(scope: Scope, question: str) -> Hit | None:
    """A fresh entry for this very question (after normalisation); counts the hit on the entry."""
    current, fresh_after, _ = cutoffs()
    return safely("exact lookup", _exact, scope, question, fresh_after, current, fresh_after, default=None)


def nearest(
    scope: Scope, vector: np.ndarray, *, valid_after: datetime, limit: int = CANDIDATES, columns: str = "id, question"
) -> list[tuple]:
    """``columns`` and the similarity of the nearest entries in the scope, nearest first."""
    return sql.nearest(
        table=ANSWERS,
        columns=columns,
        where=f"{_SCOPE_SQL} AND created_at > %s",
        params=[*scope.params(), valid_after],
        vector=vector,
        limit=limit,
        ef_search=EF_SEARCH,
    )


def _semantic(scope: Scope, question: str, vector: np.ndarray, valid_after: datetime, threshold: float) -> Hit | None:
    """The nearest entries come with their answers: a hit is one round trip (its hit is counted
    in the next batch, rag.bookkeeping)."""
    current, fresh_after, _ = cutoffs()
    columns = "id, question, answer, sources, generator, created_at"
    for entry_id, *entry, similarity in nearest(scope, vector, valid_after=valid_after, columns=columns):
        if similarity < threshold:
            break
        cached_question = entry[0]
        reason = near_miss_reason(question, cached_question)
        if reason:
            logger.debug("semantic cache: %r is not %r (%s)", question, cached_question, reason)
            continue
        hit = to_hit(CacheOutcome.SEMANTIC, entry, round(float(similarity), 4), fresh_after)
        hit.entry_id = entry_id
        bookkeeping.hit(entry_id, current)
        return hit
    return None


def lookup_semantic(scope: Scope, question: str, vector: np.ndarray) -> Hit | None:
    """The nearest fresh entry of the scope if it is similar enough and no near miss."""
    _, fresh_after, _ = cutoffs()
    threshold = config.current().cache.similarity_threshold
    return safely("semantic lookup", _semantic, scope, question, vector, fresh_after, threshold, default=None)


def lookup_stale(scope: Scope, question: str, vector: np.ndarray | None) -> Hit | None:
    """An entry expired less than ``serve_stale_seconds`` ago, to answer while generation is down."""
    current, fresh_after, stale_after = cutoffs()
    hit = safely("stale lookup", _exact, scope, question, stale_after, current, fresh_after, default=None)
    if hit is None and vector is not None:
        threshold = config.current().cache.similarity_threshold
        hit = safely("stale lookup", _semantic, scope, question, vector, stale_after, threshold, default=None)
    return hit


# SINGLE FLIGHT


def _lock_key(scope: Scope, question: str) -> int:
    material = f"semantic-cache|{scope}|{question_hash(question)}".encode()
    return int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), "big", signed=True)


def _take_lock(key: int, wait_seconds: float, lazy: bool) -> bool:
    # One round trip: the SETs apply to the statements after them in the same string.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('lock_timeout', %s, true); SELECT pg_advisory_xact_lock(%s); "
            "SET LOCAL lock_timeout TO DEFAULT" + ("; SET LOCAL synchronous_commit TO off" if lazy else ""),
            [f"{max(1, int(wait_seconds * 1000))}ms", key],
        )
    return True


@contextmanager
def single_flight(scope: Scope, question: str) -> Iterator[bool]:
    """Hold the question's lock for the rest of a transaction; yields whether it is held.

    Identical misses in every thread and process queue on one Postgres advisory lock; the first
    answers and stores, the others re-check the cache once they hold it. The lock goes with the
    transaction, so a crash or an exception cannot leave it held. A waiter gives up after about
    one model call's timeout and answers on its own.

    When the transaction is this function's own (no caller's around it), what it writes is a
    cache entry, its clean-up and the question's bookkeeping: its commit does not wait for the
    disk, and the bookkeeping goes in the next batch (rag.bookkeeping) rather than into it.
    """
    pool = config.current().pool
    own = not connection.in_atomic_block
    with transaction.atomic(), bookkeeping.deferred(own):
        wait = pool.connect_timeout + pool.read_timeout
        yield safely("single-flight lock", _take_lock, _lock_key(scope, question), wait, own, default=False)


# STORE, EXPIRY AND EVICTION

_indexed: set[tuple[str, int]] = {(DEFAULT_MODEL, DEFAULT_DIMENSIONS)}


def ensure_answer_index(model_name: str, dimensions: int) -> None:
    """Give an embedding model other than the default its partial HNSW index, once per process."""
    key = (model_name, dimensions)
    if key in _indexed:
        return
    created = safely(
        "creating the vector index",
        lambda: sql.create_hnsw_index(
            table=ANSWERS,
            prefix="cachedanswer",
            model_name=model_name,
            dimensions=dimensions,
            m=ANSWER_HNSW_M,
            ef_construction=ANSWER_HNSW_EF_CONSTRUCTION,
        ),
        default=None,
    )
    if created:
        _indexed.add(key)


def _store(
    scope: Scope, question: str, vector: np.ndarray, answer: str, sources: list[dict[str, Any]], generator: str
) -> bool:
    columns = (
        "collection_ids, corpus_versions, embedding_model, generation, prompt_version, k, "
        "question_hash, question, embedding, answer, sources, generator, created_at"
    )
    params = [
        list(scope.collection_ids),
        list(scope.corpus_versions),
        scope.embedding_model,
        scope.generation,
        scope.prompt_version,
        scope.k,
        question_hash(question),
        question,
        sql.vector_literal(vector),
        answer,
        json.dumps(sources),
        generator,
        now(),
    ]
    with connection.cursor() as cursor:
        # A conflict means an expired entry of the same question (a fresh one would have been
        # served): replace it, as a new entry with no hits.
        cursor.execute(
            f"WITH stored AS (INSERT INTO {ANSWERS} ({columns}) "
            "VALUES (%s::bigint[], %s::bigint[], %s, %s, %s, %s, %s, %s, %s::vector, %s, %s, %s, %s) "
            f"ON CONFLICT ON CONSTRAINT {_UNIQUE} DO UPDATE SET question = EXCLUDED.question, "
            "embedding = EXCLUDED.embedding, answer = EXCLUDED.answer, sources = EXCLUDED.sources, "
            "generator = EXCLUDED.generator, created_at = EXCLUDED.created_at RETURNING id, xmax = 0 AS inserted), "
            f"reset AS (DELETE FROM {USAGE} WHERE entry_id IN (SELECT id FROM stored WHERE NOT inserted)) "
            "SELECT inserted FROM stored",
            params,
        )
        inserted = cursor.fetchone()[0]
    if not inserted:
        bookkeeping.count({"expirations": 1})
    return True


def is_full() -> bool:
    """Whether the cache holds ``max_entries`` answers or more (a store would evict one)."""
    limit = config.current().cache.max_entries

    def full() -> bool:
        with connection.cursor() as cursor:
            # Counts at most ``limit`` rows, however large the table.
            cursor.execute(f"SELECT count(*) FROM (SELECT 1 FROM {ANSWERS} LIMIT %s) AS n", [limit])
            return cursor.fetchone()[0] >= limit

    return safely("size check", full, default=True)


def store(
    scope: Scope, question: str, vector: np.ndarray, answer: str, sources: list[dict[str, Any]], generator: str
) -> bool:
    """Cache a (non-degraded) answer, then trim the table; False when it could not be stored."""
    stored = safely("store", _store, scope, question, vector, answer, sources, generator, default=False)
    if stored:
        safely("clean-up", _clean, scope, default=None)
    return stored


def _deleting(where: str, returning: str = "1") -> str:
    """Delete entries and their usage rows in one statement."""
    return (
        f"WITH gone AS (DELETE FROM {ANSWERS} a WHERE {where} RETURNING a.id, {returning} AS out), "
        f"forgotten AS (DELETE FROM {USAGE} WHERE entry_id IN (SELECT id FROM gone)) SELECT out FROM gone"
    )


def _clean(scope: Scope) -> dict[str, int]:
    """Drop entries of older corpus versions (of the scope's collections: an entry of any set that
    holds one of them, or a collection deleted since), entries past the stale window, and the LRU
    excess.

    Once over ``max_entries`` it evicts 2 % of it more than the excess, so that a full cache does
    not sort the table on every store.
    """
    cfg = config.current().cache
    _, fresh_after, stale_after = cutoffs()
    removed = {"invalidations": 0, "expirations": 0, "evictions": 0}
    # Expired entries go before fresh ones, then the least recently used.
    victims = (
        f"a.id IN (SELECT v.id FROM {ANSWERS} v LEFT JOIN {USAGE} u ON u.entry_id = v.id "
        "ORDER BY v.created_at > %s, COALESCE(u.last_hit_at, v.created_at), COALESCE(u.hits, 0), v.id "
        "LIMIT (SELECT CASE WHEN n > %s THEN n - %s + %s / 50 ELSE 0 END "
        f"FROM (SELECT count(*) AS n FROM {ANSWERS}) c))"
    )
    limit = cfg.max_entries
    with connection.cursor() as cursor:
        # The three deletes in one round trip, one result each, in order.
        cursor.execute(
            "; ".join(
                [
                    _deleting(
                        "a.collection_ids && %s::bigint[] AND EXISTS (SELECT 1 FROM unnest(a.collection_ids, "
                        f"a.corpus_versions) AS u(id, version) LEFT JOIN {COLLECTIONS} c ON c.id = u.id "
                        "WHERE c.id IS NULL OR c.corpus_version <> u.version)"
                    ),
                    _deleting("a.created_at <= %s"),
                    _deleting(victims, "a.created_at > %s"),
                ]
            ),
            [list(scope.collection_ids), stale_after, fresh_after, limit, limit, limit, fresh_after],
        )
        removed["invalidations"] = len(cursor.fetchall())
        cursor.nextset()
        removed["expirations"] = len(cursor.fetchall())
        cursor.nextset()
        fresh = [row[0] for row in cursor.fetchall()]
    removed["evictions"] = sum(fresh)
    removed["expirations"] += len(fresh) - sum(fresh)
    bookkeeping.count(removed)
    return removed


def purge_expired() -> int:
    """Delete the entries past the stale window everywhere (the housekeeping job: a cache that
    stores nothing new would otherwise keep them); returns how many."""
    _, _, stale_after = cutoffs()
    with connection.cursor() as cursor:
        cursor.execute(_deleting("a.created_at <= %s"), [stale_after])
        removed = len(cursor.fetchall())
    increment({"expirations": removed})
    return removed
