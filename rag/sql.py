"""SQL shared by retrieval and the caches: vector literals, per-model HNSW indexes, nearest
neighbours with an exact fallback, and bookkeeping writes that do not wait for the disk."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from django.db import connection, transaction

_INDEX_NAME_UNSAFE = re.compile(r"[^a-z0-9]+")


def vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.9g}" for x in np.asarray(vector, dtype=np.float32).tolist()) + "]"


# PER-MODEL HNSW INDEXES
# Embeddings are stored untyped, so vectors of models with different dimensions share a table.
# pgvector indexes need a fixed dimension: each model gets a partial HNSW index over
# ``embedding::vector(N)`` restricted to its rows. The default model's ship in the migrations.


def hnsw_index_name(prefix: str, model_name: str, dimensions: int) -> str:
    slug = _INDEX_NAME_UNSAFE.sub("_", model_name.lower()).strip("_")[:30]
    return f"{prefix}_{slug}_{int(dimensions)}_hnsw"


def index_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", [name])
        return cursor.fetchone() is not None


def create_hnsw_index(
    *, table: str, prefix: str, model_name: str, dimensions: int, m: int = 16, ef_construction: int = 64
) -> str:
    """Create (if missing) the partial HNSW cosine index of one model's rows; returns its name.

    Call it outside long transactions: creating the index blocks writes to the table until commit.
    Building it over rows already written is several times faster than inserting the same rows
    into it one by one (``python -m bench retrieval``): bulk loads create it afterwards.
    """
    name = hnsw_index_name(prefix, model_name, dimensions)
    if not index_exists(name):
        with connection.cursor() as cursor:
            if connection.in_atomic_block:
                # Rows written earlier in the transaction leave deferred foreign-key checks, and
                # CREATE INDEX refuses to run while any are pending: run them now.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(
                f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING hnsw "
                f"((embedding::vector({int(dimensions)})) vector_cosine_ops) "
                f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)}) WHERE embedding_model = %s",
                [model_name],
            )
    return name


def nearest(
    *,
    table: str,
    columns: str,
    where: str,
    params: Sequence[Any],
    vector: np.ndarray,
    limit: int,
    ef_search: int,
    min_rows: int = 1,
    exact: bool = False,
    iterative: bool = False,
) -> list[tuple[Any, ...]]:
    """``columns`` and the cosine similarity of the rows nearest ``vector``, nearest first.

    ``where`` must begin with the model filter (``embedding_model = %s``) so that it and the ORDER
    BY mirror the model's partial HNSW index and the planner can use it. pgvector 0.6 has no
    iterative index scans: the index yields ``ef_search`` candidates and the rest of ``where``
    filters them afterwards, so a selective filter can leave fewer than ``min_rows``; the filtered
    rows are then scanned exactly. ``exact`` scans them exactly at once (the caller knows they
    are few: rag.vector_plan); ``iterative`` lets a pgvector 0.8+ index scan go on until it has
    found ``limit`` rows that pass the filter.
    """
    dims = int(vector.shape[0])
    literal = vector_literal(vector)
    distance = f"(embedding::vector({dims})) <=> %s::vector({dims})"
    # OFFSET 0 keeps the subquery from being flattened, so the filter is read through its b-tree
    # index and sorted, never through the HNSW index.
    exact_sql = (
        f"SELECT * FROM (SELECT {columns}, 1 - ({distance}) AS similarity FROM {table} "
        f"WHERE {where} OFFSET 0) AS scoped ORDER BY similarity DESC LIMIT %s"
    )
    with connection.cursor() as cursor:
        if exact:
            cursor.execute(exact_sql, [literal, *params, limit])
            return cursor.fetchall()
        # Sent as one string, the SETs and the SELECT share a transaction even in autocommit:
        # SET LOCAL takes effect without a BEGIN and COMMIT of its own.
        iterate = "SET LOCAL hnsw.iterative_scan = strict_order; " if iterative else ""
        cursor.execute(
            f"SET LOCAL hnsw.ef_search = {max(int(ef_search), int(limit))}; {iterate}"
            f"SELECT {columns}, 1 - ({distance}) FROM {table} WHERE {where} ORDER BY {distance} LIMIT %s",
            [literal, *params, literal, limit],
        )
        for _ in range(2 if iterative else 1):  # past the SETs' results
            cursor.nextset()
        rows = cursor.fetchall()
        if len(rows) < min_rows:
            cursor.execute(exact_sql, [literal, *params, limit])
            rows = cursor.fetchall()
    return rows


# BOOKKEEPING WRITES
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
