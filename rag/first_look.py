"""The first statement of every question: everything the answer pipeline can learn in one round trip.

One statement, data-modifying CTEs and all:

- counts the request against the caller's throttle budget (rag.throttling; when the view handed
  over a ticket);
- resolves the collections named (or ``*``) among those the caller may read (rag.visibility's
  ``readable_sql``), with their corpus versions;
- looks the question up in the answer cache by its normalised text, at those versions, only if
  the throttle let it through and every collection named is readable;
- when there is no hit, fetches the question's cached embedding for these collections (the semantic lookup needs it);
- takes the query log id the answer will carry (rag.query_log).

So an exact hit answers after this one round trip (its hit count and log row are written in the
next batch, rag.bookkeeping), and a semantic hit whose question was embedded before after one
more (the nearest cached questions, rag.answer_cache).

A broken cache table must not fail a question: when the statement fails it is sent once more
without the caches (throttle, collections and id only), and the failure is logged and counted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from django.db import connection

from rag import bookkeeping
from rag.answer_cache import ANSWERS, COLLECTIONS, Hit, cutoffs, generation_key, to_hit
from rag.cache_counters import record_error
from rag.embedding_cache import QUESTION_KEY_SQL
from rag.generation import PROMPT_VERSION
from rag.models import CachedEmbedding, CacheOutcome
from rag.query_log import NEXT_ID_SQL
from rag.text import question_hash, text_hash
from rag.throttling import COUNT_SQL, Refused, Ticket
from rag.visibility import EVERY, Caller, readable_sql
from resilience.db import savepoint

logger = logging.getLogger("rag.answer_cache")

EMBEDDINGS = CachedEmbedding._meta.db_table


def prepared_cursor() -> Any:
    """A cursor whose statements psycopg prepares on the connection once it has run them a few
    times (server-side binding, and the ``prepare_threshold`` of ragsite/settings.py; Django's own
    cursors bind on the client and never prepare): the first statement is planned once per
    connection, not on every question. Wrapped like Django's cursors: counted and logged alike.
    """
    connection.close_if_health_check_failed()  # as Django's cursor() does first
    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw = psycopg.Cursor(connection.connection)
    return connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)


@dataclass
class FirstLook:
    found: list[tuple[int, int, str]]  # (id, corpus version, name) of the readable collections named
    hit: Hit | None = None
    embedding: np.ndarray | None = None  # the question's cached embedding, when there is no hit
    query_id: int | None = None


def first_look(
    *,
    caller: Caller,
    names: Sequence[str],
    question: str,
    embedding_model: str,
    k: int,
    throttle: Ticket | None = None,
    exact: bool = True,
    embedding: bool = True,
    log: bool = True,
) -> FirstLook:
    """Run the first statement. Raises rag.throttling.Refused when the caller is over its budget
    (the request is not counted then, and nothing was looked up)."""
    arguments = (caller, names, question, embedding_model, k, throttle, log)
    if exact or embedding:
        try:
            with savepoint():
                return _run(*arguments, exact=exact, embedding=embedding)
        except Refused:
            raise
        except Exception as exc:
            logger.warning("semantic cache: first lookup failed: %s", exc)
            record_error()
    return _run(*arguments, exact=False, embedding=False)


def _run(
    caller: Caller,
    names: Sequence[str],
    question: str,
    embedding_model: str,
    k: int,
    throttle: Ticket | None,
    log: bool,
    *,
    exact: bool,
    embedding: bool,
) -> FirstLook:
    ctes: list[str] = []
    params: list[Any] = []
    if throttle is not None:
        ctes.append(f"t AS ({COUNT_SQL})")
        params += throttle.params()
    every = set(names) == {EVERY}
    readable, readable_params = readable_sql(caller)
    wanted = sorted(set(names))
    ctes.append(
        "scope AS (SELECT array_agg(c.id ORDER BY c.id) AS ids, array_agg(c.corpus_version ORDER BY c.id) AS "
        f"versions, array_agg(c.name ORDER BY c.id) AS names FROM {COLLECTIONS} c WHERE c.id IN ({readable})"
        + ("" if every else " AND c.name = ANY(%s)")
        + ")"
    )
    params += [*readable_params, *([] if every else [wanted])]
    current, fresh_after, _ = cutoffs()
    if exact:
        allowed = "(SELECT t.previous * %s + t.count <= %s FROM t) AND " if throttle is not None else ""
        params += [throttle.overlap, throttle.limit] if throttle is not None else []
        ctes.append(
            "hit AS (SELECT a.id, a.question, a.answer, a.sources, a.generator, a.created_at "
            f"FROM {ANSWERS} a, scope WHERE {allowed}cardinality(scope.ids) "
            + ("> 0" if every else "= %s")
            + " AND a.embedding_model = %s AND a.collection_ids = scope.ids AND a.corpus_versions = scope.versions "
            "AND a.generation = %s AND a.prompt_version = %s AND a.k = %s AND a.question_hash = %s "
            "AND a.created_at > %s LIMIT 1)"
        )
        params += [] if every else [len(wanted)]
        params += [embedding_model, generation_key(), PROMPT_VERSION, k, question_hash(question), fresh_after]
    if embedding:
        no_hit = " AND NOT EXISTS (SELECT 1 FROM hit)" if exact else ""
        ctes.append(
            f"emb AS (SELECT e.embedding::text AS vector FROM {EMBEDDINGS} e, scope "
            f"WHERE e.model = %s AND e.text_hash = {QUESTION_KEY_SQL}{no_hit} LIMIT 1)"
        )
        params += [embedding_model, f"{text_hash(question)}:"]
    columns = [
        "(SELECT t.count FROM t), (SELECT t.previous FROM t)" if throttle is not None else "NULL, NULL",
        "scope.ids, scope.versions, scope.names",
        "hit.id, hit.question, hit.answer, hit.sources, hit.generator, hit.created_at"
        if exact
        else "NULL, NULL, NULL, NULL, NULL, NULL",
        "(SELECT vector FROM emb)" if embedding else "NULL",
        NEXT_ID_SQL if log else "NULL",
    ]
    if not connection.in_atomic_block:
        # Its only write is to the unlogged throttle table: a commit that need not wait for the
        # disk (inside a caller's transaction, the caller's commit decides).
        columns.append("set_config('synchronous_commit', 'off', true)")
    statement = f"WITH {', '.join(ctes)} SELECT {', '.join(columns)} FROM scope" + (
        " LEFT JOIN hit ON true" if exact else ""
    )
    with prepared_cursor() as cursor:
        cursor.execute(statement, params)
        row = cursor.fetchone()
    count, previous, ids, versions, found_names, entry_id, *entry, vector, query_id = row[:13]
    if throttle is not None:
        throttle.settle(int(count), int(previous))  # raises Refused
    found = list(zip(ids or [], versions or [], found_names or [], strict=True))
    look = FirstLook(found=found, query_id=query_id)
    if entry_id is not None:
        look.hit = to_hit(CacheOutcome.EXACT, entry, None, fresh_after)
        look.hit.entry_id = entry_id
        look.hit.collections = tuple(sorted(found_names))
        look.hit.collection_ids = tuple(ids)
        bookkeeping.hit(entry_id, current)
    elif vector is not None:
        look.embedding = np.asarray(json.loads(vector), dtype=np.float32)
    return look
