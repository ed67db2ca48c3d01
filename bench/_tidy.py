"""What a bench takes back after it ran against the database `make run` leaves."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connection

from rag import cache_counters
from rag.models import CacheCounter, CachedAnswer, CachedEmbedding, QueryLog
from ragsite import embedded_db

ROOT = Path(__file__).resolve().parent.parent


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


@dataclass(frozen=True)
class Newest:
    """The newest ids of the rows a bench's requests add, taken before it runs."""

    embedding: int
    answer: int
    log: int


def newest() -> Newest:
    def top(model: Any) -> int:
        return model.objects.order_by("-id").values_list("id", flat=True).first() or 0

    return Newest(embedding=top(CachedEmbedding), answer=top(CachedAnswer), log=top(QueryLog))


def drop_newer(cursor: Any, since: Newest, *, log_collection: str) -> None:
    """What the bench's requests added after ``since``: cached answers and their usage rows,
    cached embeddings, and the query log rows of ``log_collection``."""
    cursor.execute(f"DELETE FROM {CachedAnswer._meta.db_table} WHERE id > %s", [since.answer])
    drop_orphan_usage(cursor)
    CachedEmbedding.objects.filter(id__gt=since.embedding).delete()
    QueryLog.objects.filter(id__gt=since.log, collection=log_collection).delete()


@contextmanager
def embedded_server_env() -> Iterator[dict[str, str]]:
    """The environment of a gunicorn a bench starts (ragsite.liveserver.serve): the embedded
    database through its socket, and a Prometheus folder of its own, removed afterwards."""
    options = connection.settings_dict.get("OPTIONS", {})
    data_dir = Path(options.get("embedded_data_dir") or ROOT / "var" / "pgdata")
    metrics_dir = ROOT / "var" / f"bench-prometheus-{os.getpid()}"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield {
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "DATABASE_URL": f"postgresql://postgres@/postgres?host={embedded_db.socket_dir(data_dir)}",
        }
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
