"""The semantic answer cache and the embedding cache, both in Postgres.

Answers are cached per *scope*: collection and corpus version, embedding model, generation
backend and model, prompt version and k. A lookup tries, in order:

1. exact: the hash of the normalised question (case, whitespace, trailing punctuation), no
   embedding needed;
2. semantic: the nearest cached question of the same scope by cosine similarity (pgvector HNSW,
   the scope inside the SQL ``WHERE``), accepted at ``similarity_threshold`` and only if the two
   questions do not differ in a negation, a number or a content word (``near_miss_reason``).

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
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np
from django.db import DatabaseError, connection, transaction

from rag.generation import PROMPT_VERSION, STOPWORDS
from rag.models import DEFAULT_DIMENSIONS, DEFAULT_MODEL, Collection
from resilience import config
from resilience.models import (
    ANSWER_HNSW_EF_CONSTRUCTION,
    ANSWER_HNSW_M,
    CacheCounter,
    CachedAnswer,
    CachedAnswerUsage,
    CachedEmbedding,
)

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
COUNTERS = CacheCounter._meta.db_table
_UNIQUE = "cachedanswer_unique_question"
_SCOPE_SQL = (
    "embedding_model = %s AND collection_id = %s AND corpus_version = %s AND generation = %s "
    "AND prompt_version = %s AND k = %s"
)

T = TypeVar("T")


def now() -> datetime:
    return datetime.fromtimestamp(timer(), tz=UTC)


# NORMALISATION

_SPACE = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s?!.,;:\u2026\u00bf\u00a1]+$")


def normalise_question(text: str) -> str:
    """Case, spacing and trailing punctuation folded: "What is X?" and "what  is x" are one key."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _TRAILING.sub("", _SPACE.sub(" ", text).strip())


def question_hash(text: str) -> str:
    return hashlib.sha256(normalise_question(text).encode("utf-8")).hexdigest()


def text_hash(text: str) -> str:
    """The embedding cache key: only spacing is folded, since a cased model sees case."""
    normalised = _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


# THE NEAR-MISS GUARD
# Sentence embeddings place "How do I start a thread?" and "How do I stop a thread?", or a
# question and its negation, close together (often above 0.9). Similarity alone would serve one's
# answer to the other; these checks reject such pairs cheaply, after the similarity test.

# Words, and operators standing on their own ("is" vs "==" questions); "built-in" is two words.
_TOKEN = re.compile(r"[a-z0-9_]+(?:'[a-z]+)?|(?<!\w)[=!<>+\-*/%&|^~@]+(?!\w)")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


NEGATIONS = _words("not no never none nothing nobody neither nor without except unless")
NUMBER_WORDS = _words(
    "zero one two three four five six seven eight nine ten eleven twelve twenty hundred thousand million "
    "first second third fourth fifth last once twice"
)
# Words that frame a question without changing what it asks ("What is the purpose of X?",
# "How does X work?"): a paraphrase may add or drop them.
FRAME_WORDS = _words(
    "purpose mean means meaning meant work works working use used uses using usage happen happens "
    "describe please exactly actually really basically briefly"
)
_CONTRACTIONS = frozenset(["cannot", "can't", "won't", "shan't"])
_SUFFIXES = ("ations", "ation", "ings", "ing", "edly", "ed", "es", "s", "ly", "e")


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


@dataclass(frozen=True)
class _Terms:
    negations: tuple[str, ...]
    numbers: frozenset[str]
    content: frozenset[str]


def _terms(text: str) -> _Terms:
    negations: list[str] = []
    numbers: set[str] = set()
    content: set[str] = set()
    text = unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")
    for token in _TOKEN.findall(text):
        if token in _CONTRACTIONS or token.endswith("n't"):
            negations.append("not")
            continue
        token = token.removesuffix("'s")
        if token in NEGATIONS:
            negations.append(token if token != "nor" else "neither")
        elif any(ch.isdigit() for ch in token) or token in NUMBER_WORDS:
            numbers.add(token)
        elif token not in STOPWORDS and token not in FRAME_WORDS:
            content.add(_stem(token))
    return _Terms(tuple(sorted(negations)), frozenset(numbers), frozenset(content))


def _same_word(a: str, b: str) -> bool:
    # Stems are crude: "defin" (define) and "definition" count as one word when one is a prefix
    # of the other and long enough not to be a different word.
    return a == b or (min(len(a), len(b)) >= 4 and (a.startswith(b) or b.startswith(a)))


def near_miss_reason(question: str, cached: str) -> str | None:
    """Why two similar questions must not share an answer, or None when they may."""
    a, b = _terms(question), _terms(cached)
    if a.negations != b.negations:
        return "negation differs"
    if a.numbers != b.numbers:
        return "numbers differ"
    for one, other in ((a.content, b.content), (b.content, a.content)):
        unmatched = [w for w in one if not any(_same_word(w, o) for o in other)]
        if unmatched:
            return f"word {sorted(unmatched)[0]!r} not in the other question"
    return None


# ERROR HANDLING AND COUNTERS

_lock = threading.Lock()
_unrecorded_errors = 0  # errors that could not be counted in the database either


def _savepoint() -> AbstractContextManager[Any]:
    """A savepoint inside a caller's transaction; none in autocommit, where a failed statement
    poisons nothing and BEGIN/COMMIT would only add round trips."""
    return transaction.atomic() if connection.in_atomic_block else nullcontext()


# Hit counts, counters and the query log may lose their last fraction of a second in a crash;
# waiting for the WAL flush cost about 1 ms a write here (fdatasync), three writes on every hit.
_LAZY = "; SET LOCAL synchronous_commit TO off"


def lazily(sql: str) -> str:
    """One bookkeeping statement, committed without waiting for the disk (in autocommit only:
    inside a caller's transaction, the caller's commit decides)."""
    return sql if connection.in_atomic_block else sql + _LAZY


@contextmanager
def lazy_commit() -> Iterator[None]:
    """Several bookkeeping writes (ORM ones too) in one transaction committed the same way."""
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO off")
        yield


def safely(what: str, fn: Callable[..., T], *args: Any, default: T) -> T:
    """Run ``fn`` (in a savepoint when in a transaction); on failure log, count and return ``default``."""
    try:
        with _savepoint():
            return fn(*args)
    except Exception as exc:
        # A database error is expected here (a broken table, a lost connection); anything else is
        # a bug worth its traceback.
        logger.warning("semantic cache: %s failed: %s", what, exc, exc_info=not isinstance(exc, DatabaseError))
        record_error()
        return default


def increment_sql(counts: dict[str, int]) -> tuple[str, list[Any]]:
    """The statement adding ``counts`` to the shared counters, to run alone or with others."""
    items = sorted((name, n) for name, n in counts.items() if n)  # one lock order: no deadlocks
    values = ", ".join(["(%s, %s)"] * len(items))
    sql = (
        f"INSERT INTO {COUNTERS} (name, value) VALUES {values} "
        f"ON CONFLICT (name) DO UPDATE SET value = {COUNTERS}.value + EXCLUDED.value"
    )
    return sql, [x for item in items for x in item]


def _increment(counts: dict[str, int]) -> None:
    if not any(counts.values()):
        return
    sql, params = increment_sql(counts)
    with connection.cursor() as cursor:
        cursor.execute(lazily(sql), params)


def count(**counts: int) -> None:
    """Add to the shared counters (``count(misses=1)``); never raises."""
    if any(counts.values()):
        safely("counting", _increment, counts, default=None)


def record_error() -> None:
    global _unrecorded_errors
    try:
        with _savepoint():
            _increment({"errors": 1})
    except Exception:
        with _lock:
            _unrecorded_errors += 1


def lookup_counter(cache: str) -> str:
    """The counter of a query's cache outcome: exact, semantic, miss or bypass."""
    return {"exact": "exact_hits", "semantic": "semantic_hits", "miss": "misses"}.get(cache, "bypasses")


# SCOPE AND HITS


@dataclass(frozen=True)
class Scope:
    collection_id: int
    corpus_version: int
    embedding_model: str
    generation: str
    prompt_version: str
    k: int

    @classmethod
    def for_query(cls, collection: Any, *, embedding_model: str, k: int) -> Scope:
        return cls(collection.pk, collection.corpus_version, embedding_model, generation_key(), PROMPT_VERSION, k)

    def params(self) -> list[Any]:
        return [
            self.embedding_model,
            self.collection_id,
            self.corpus_version,
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
    kind: str  # exact | semantic
    question: str  # the cached question, as first asked
    answer: str
    sources: list[dict[str, Any]]
    generator: str
    created_at: datetime
    similarity: float | None = None
    stale: bool = False


def _hit(kind: str, row: Sequence[Any], similarity: float | None, fresh_after: datetime) -> Hit:
    question, answer, sources, generator, created_at = row
    if isinstance(sources, str):
        sources = json.loads(sources)
    return Hit(kind, question, answer, sources, generator, created_at, similarity, stale=created_at <= fresh_after)


def _hit_sql(where: str) -> str:
    """Select an entry and count the hit on it, in one round trip.

    The hit is recorded in the usage table, never on the entry: see CachedAnswerUsage.
    """
    return (
        f"WITH hit AS (SELECT id, question, answer, sources, generator, created_at FROM {ANSWERS} WHERE {where}), "
        f"used AS (INSERT INTO {USAGE} (entry_id, hits, last_hit_at) SELECT id, 1, %s FROM hit "
        f"ON CONFLICT (entry_id) DO UPDATE SET hits = {USAGE}.hits + 1, last_hit_at = EXCLUDED.last_hit_at) "
        "SELECT question, answer, sources, generator, created_at FROM hit"
    )


_EXACT_SQL = _hit_sql(f"{_SCOPE_SQL} AND question_hash = %s AND created_at > %s")
# The same, for a collection known by its name: its current corpus version is read in the same
# statement, so an exact hit needs no query of its own for the collection.
_EXACT_NAMED_SQL = _hit_sql(
    f"embedding_model = %s AND (collection_id, corpus_version) = (SELECT id, corpus_version FROM "
    f"{Collection._meta.db_table} WHERE name = %s) AND generation = %s AND prompt_version = %s AND k = %s "
    "AND question_hash = %s AND created_at > %s"
)
_BY_ID_SQL = _hit_sql("id = %s")


def _cutoffs() -> tuple[datetime, datetime, datetime]:
    """(now, fresh after, servable-stale after)."""
    cfg = config.current().cache
    current = now()
    fresh_after = current - timedelta(seconds=cfg.ttl_seconds)
    return current, fresh_after, fresh_after - timedelta(seconds=cfg.serve_stale_seconds)


def _exact(scope: Scope, question: str, valid_after: datetime, current: datetime, fresh_after: datetime) -> Hit | None:
    with connection.cursor() as cursor:
        cursor.execute(lazily(_EXACT_SQL), [*scope.params(), question_hash(question), valid_after, current])
        row = cursor.fetchone()
    return _hit("exact", row, None, fresh_after) if row else None


def lookup_exact(scope: Scope, question: str) -> Hit | None:
    """A fresh entry for this very question (after normalisation); counts the hit on the entry."""
    current, fresh_after, _ = _cutoffs()
    return safely("exact lookup", _exact, scope, question, fresh_after, current, fresh_after, default=None)


def _exact_named(collection_name: str, question: str, embedding_model: str, k: int) -> Hit | None:
    current, fresh_after, _ = _cutoffs()
    params = [embedding_model, collection_name, generation_key(), PROMPT_VERSION, k, question_hash(question)]
    with connection.cursor() as cursor:
        cursor.execute(lazily(_EXACT_NAMED_SQL), [*params, fresh_after, current])
        row = cursor.fetchone()
    return _hit("exact", row, None, fresh_after) if row else None


def lookup_exact_named(collection_name: str, question: str, *, embedding_model: str, k: int) -> Hit | None:
    """``lookup_exact`` in the scope of a collection's current corpus version, in one round trip.

    None also when there is no such collection: the caller finds that out on the miss path.
    """
    return safely("exact lookup", _exact_named, collection_name, question, embedding_model, k, default=None)


def _literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.9g}" for x in np.asarray(vector, dtype=np.float32).tolist()) + "]"


def nearest(scope: Scope, vector: np.ndarray, *, valid_after: datetime, limit: int = CANDIDATES) -> list[tuple]:
    """(id, question, similarity) of the nearest entries in the scope, nearest first.

    The ORDER BY expression and the model filter mirror the model's partial HNSW index, so the
    planner can use it with the rest of the scope in the same WHERE. When the index scan's
    candidates hold none of the scope, the scope is scanned exactly (it is small then).
    """
    dims = int(vector.shape[0])
    literal = _literal(vector)
    distance = f"(embedding::vector({dims})) <=> %s::vector({dims})"
    where = f"{_SCOPE_SQL} AND created_at > %s"
    params = [*scope.params(), valid_after]
    with connection.cursor() as cursor:
        # Sent as one string, the SET and the SELECT share a transaction even in autocommit:
        # SET LOCAL takes effect without a BEGIN and COMMIT of its own.
        cursor.execute(
            f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, int(limit))}; "
            f"SELECT id, question, 1 - ({distance}) FROM {ANSWERS} WHERE {where} ORDER BY {distance} LIMIT %s",
            [literal, *params, literal, limit],
        )
        cursor.nextset()
        rows = cursor.fetchall()
        if not rows:
            # OFFSET 0 keeps the subquery from being flattened, so the scope is read by its
            # b-tree index and sorted, never through the HNSW index.
            cursor.execute(
                f"SELECT id, question, similarity FROM (SELECT id, question, 1 - ({distance}) AS similarity "
                f"FROM {ANSWERS} WHERE {where} OFFSET 0) AS scoped ORDER BY similarity DESC LIMIT %s",
                [literal, *params, limit],
            )
            rows = cursor.fetchall()
    return [(int(r[0]), r[1], float(r[2])) for r in rows]


def _semantic(scope: Scope, question: str, vector: np.ndarray, valid_after: datetime, threshold: float) -> Hit | None:
    current, fresh_after, _ = _cutoffs()
    for entry_id, cached_question, similarity in nearest(scope, vector, valid_after=valid_after):
        if similarity < threshold:
            break
        reason = near_miss_reason(question, cached_question)
        if reason:
            logger.debug("semantic cache: %r is not %r (%s)", question, cached_question, reason)
            continue
        with connection.cursor() as cursor:
            cursor.execute(lazily(_BY_ID_SQL), [entry_id, current])
            row = cursor.fetchone()
        if row:  # else evicted a moment ago
            return _hit("semantic", row, round(similarity, 4), fresh_after)
    return None


def lookup_semantic(scope: Scope, question: str, vector: np.ndarray) -> Hit | None:
    """The nearest fresh entry of the scope if it is similar enough and no near miss."""
    _, fresh_after, _ = _cutoffs()
    threshold = config.current().cache.similarity_threshold
    return safely("semantic lookup", _semantic, scope, question, vector, fresh_after, threshold, default=None)


def lookup_stale(scope: Scope, question: str, vector: np.ndarray | None) -> Hit | None:
    """An entry expired less than ``serve_stale_seconds`` ago, to answer while generation is down."""
    current, fresh_after, stale_after = _cutoffs()
    hit = safely("stale lookup", _exact, scope, question, stale_after, current, fresh_after, default=None)
    if hit is None and vector is not None:
        threshold = config.current().cache.similarity_threshold
        hit = safely("stale lookup", _semantic, scope, question, vector, stale_after, threshold, default=None)
    return hit


# SINGLE FLIGHT


def _lock_key(scope: Scope, question: str) -> int:
    material = f"semantic-cache|{scope}|{question_hash(question)}".encode()
    return int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), "big", signed=True)


def _take_lock(key: int, wait_seconds: float) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{max(1, int(wait_seconds * 1000))}ms"])
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
        cursor.execute("SET LOCAL lock_timeout TO DEFAULT")
    return True


@contextmanager
def single_flight(scope: Scope, question: str) -> Iterator[bool]:
    """Hold the question's lock for the rest of a transaction; yields whether it is held.

    Identical misses in every thread and process queue on one Postgres advisory lock; the first
    answers and stores, the others re-check the cache once they hold it. The lock goes with the
    transaction, so a crash or an exception cannot leave it held. A waiter gives up after about
    one model call's timeout and answers on its own.
    """
    pool = config.current().pool
    with transaction.atomic():
        wait = pool.connect_timeout + pool.read_timeout
        yield safely("single-flight lock", _take_lock, _lock_key(scope, question), wait, default=False)


# STORE, EXPIRY AND EVICTION

_indexed: set[tuple[str, int]] = {(DEFAULT_MODEL, DEFAULT_DIMENSIONS)}
_INDEX_NAME_UNSAFE = re.compile(r"[^a-z0-9]+")


def answer_index_name(model_name: str, dimensions: int) -> str:
    slug = _INDEX_NAME_UNSAFE.sub("_", model_name.lower()).strip("_")[:30]
    return f"cachedanswer_{slug}_{dimensions}_hnsw"


def _ensure_index(model_name: str, dimensions: int) -> bool:
    name = answer_index_name(model_name, dimensions)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(
                f"CREATE INDEX IF NOT EXISTS {name} ON {ANSWERS} USING hnsw "
                f"((embedding::vector({int(dimensions)})) vector_cosine_ops) "
                f"WITH (m = {ANSWER_HNSW_M}, ef_construction = {ANSWER_HNSW_EF_CONSTRUCTION}) "
                "WHERE embedding_model = %s",
                [model_name],
            )
    return True


def ensure_answer_index(model_name: str, dimensions: int) -> None:
    """Give an embedding model other than the default its partial HNSW index, once per process.

    Call it outside long transactions: creating the index blocks writes to the table until commit.
    """
    key = (model_name, dimensions)
    if key in _indexed:
        return
    if safely("creating the vector index", _ensure_index, model_name, dimensions, default=False):
        _indexed.add(key)


def source_dict(chunk: Any) -> dict[str, Any]:
    """A retrieved chunk as the API shows it (the shape stored with a cached answer)."""
    return {
        "id": chunk.chunk_id,
        "document_id": chunk.document_id,
        "title": chunk.title,
        "source": chunk.source,
        "score": chunk.score,
        "text": chunk.text,
    }


def _store(
    scope: Scope, question: str, vector: np.ndarray, answer: str, sources: list[dict[str, Any]], generator: str
) -> bool:
    columns = (
        "collection_id, corpus_version, embedding_model, generation, prompt_version, k, "
        "question_hash, question, embedding, answer, sources, generator, created_at"
    )
    params = [
        scope.collection_id,
        scope.corpus_version,
        scope.embedding_model,
        scope.generation,
        scope.prompt_version,
        scope.k,
        question_hash(question),
        question,
        _literal(vector),
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
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::vector, %s, %s, %s, %s) "
            f"ON CONFLICT ON CONSTRAINT {_UNIQUE} DO UPDATE SET question = EXCLUDED.question, "
            "embedding = EXCLUDED.embedding, answer = EXCLUDED.answer, sources = EXCLUDED.sources, "
            "generator = EXCLUDED.generator, created_at = EXCLUDED.created_at RETURNING id, xmax = 0 AS inserted), "
            f"reset AS (DELETE FROM {USAGE} WHERE entry_id IN (SELECT id FROM stored WHERE NOT inserted)) "
            "SELECT inserted FROM stored",
            params,
        )
        inserted = cursor.fetchone()[0]
    if not inserted:
        _increment({"expirations": 1})
    return True


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


def _clean(scope: Scope | None) -> dict[str, int]:
    """Drop entries of older corpus versions, entries past the stale window, and the LRU excess.

    Once over ``max_entries`` it evicts 2 % of it more than the excess, so that a full cache does
    not sort the table on every store.
    """
    cfg = config.current().cache
    _, fresh_after, stale_after = _cutoffs()
    removed = {"invalidations": 0, "expirations": 0, "evictions": 0}
    with connection.cursor() as cursor:
        if scope is not None:
            cursor.execute(
                _deleting("a.collection_id = %s AND a.corpus_version < %s"),
                [scope.collection_id, scope.corpus_version],
            )
        else:
            cursor.execute(
                _deleting(
                    f"a.corpus_version < (SELECT c.corpus_version FROM {Collection._meta.db_table} c "
                    "WHERE c.id = a.collection_id)"
                )
            )
        removed["invalidations"] = len(cursor.fetchall())
        cursor.execute(_deleting("a.created_at <= %s"), [stale_after])
        removed["expirations"] = len(cursor.fetchall())
        # Expired entries go before fresh ones, then the least recently used.
        victims = (
            f"a.id IN (SELECT v.id FROM {ANSWERS} v LEFT JOIN {USAGE} u ON u.entry_id = v.id "
            "ORDER BY v.created_at > %s, COALESCE(u.last_hit_at, v.created_at), COALESCE(u.hits, 0), v.id "
            "LIMIT (SELECT CASE WHEN n > %s THEN n - %s + %s / 50 ELSE 0 END "
            f"FROM (SELECT count(*) AS n FROM {ANSWERS}) c))"
        )
        limit = cfg.max_entries
        cursor.execute(_deleting(victims, "a.created_at > %s"), [fresh_after, limit, limit, limit, fresh_after])
        fresh = [row[0] for row in cursor.fetchall()]
        if scope is None:
            cursor.execute(
                f"DELETE FROM {USAGE} u WHERE NOT EXISTS (SELECT 1 FROM {ANSWERS} a WHERE a.id = u.entry_id)"
            )
    removed["evictions"] = sum(fresh)
    removed["expirations"] += len(fresh) - sum(fresh)
    _increment(removed)
    return removed


def purge() -> dict[str, int]:
    """Clean up the whole table now (the store path cleans up after itself as it goes)."""
    return safely("purge", _clean, None, default={})


# STATS


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
        "errors": counters["errors"] + _unrecorded_errors,
        "ttl_seconds": cfg.ttl_seconds,
        "serve_stale_seconds": cfg.serve_stale_seconds,
        "threshold": cfg.similarity_threshold,
    }


# EMBEDDING CACHE


def _load_embeddings(model: str, keys: list[str]) -> dict[str, np.ndarray]:
    rows = CachedEmbedding.objects.filter(model=model, text_hash__in=keys).values_list("text_hash", "embedding")
    return {key: np.asarray(vector, dtype=np.float32) for key, vector in rows}


def _save_embeddings(model: str, vectors: dict[str, np.ndarray]) -> None:
    with lazy_commit():
        CachedEmbedding.objects.bulk_create(
            [CachedEmbedding(model=model, text_hash=key, embedding=vector) for key, vector in vectors.items()],
            ignore_conflicts=True,
        )


def embed_cached(embedder: Any, texts: list[str]) -> np.ndarray:
    """``embedder.embed(texts)``, asking the model only for texts it has not embedded before.

    Vectors are keyed by the embedder's name and the text's hash, so an unchanged chunk of an
    edited file, or a question asked again, costs no model call. Model errors propagate.
    """
    if not texts:
        return embedder.embed(texts)
    keys = [text_hash(t) for t in texts]
    found = safely("embedding lookup", _load_embeddings, embedder.name, sorted(set(keys)), default={})
    todo: dict[str, str] = {}
    for key, text in zip(keys, texts, strict=True):
        if key not in found:
            todo.setdefault(key, text)
    if todo:
        fresh = embedder.embed(list(todo.values()))
        new = dict(zip(todo, np.asarray(fresh, dtype=np.float32), strict=True))
        safely("embedding store", _save_embeddings, embedder.name, new, default=None)
        found.update(new)
    vectors = [found[key] for key in keys]
    if len({v.shape for v in vectors}) > 1:  # the model changed under the same name
        logger.warning("embedding cache: %s vectors of different dimensions; embedding afresh", embedder.name)
        return embedder.embed(texts)
    return np.stack(vectors)


@dataclass
class CachingEmbedder:
    """Wraps an embedder (same name, same vectors) with the embedding cache."""

    inner: Any
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.inner.name

    def embed(self, texts: list[str]) -> np.ndarray:
        return embed_cached(self.inner, texts)


def caching(embedder: Any) -> CachingEmbedder:
    return embedder if isinstance(embedder, CachingEmbedder) else CachingEmbedder(embedder)
