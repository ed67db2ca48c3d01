"""How to find the nearest chunks of some collections: through the HNSW index, or an exact scan.

pgvector 0.6 (the embedded server's) has no iterative index scans: the HNSW index hands back the
``hnsw.ef_search`` candidates nearest the question in the whole table, and the collection filter
then keeps only those of the wanted collections. When those collections are a small share of the
table, few of their true nearest chunks are among the candidates, or none. Measured with
``python -m bench filtered`` (100k chunks, 50 collections; see the README): filtering after the
scan found a quarter of the true ten nearest chunks of a collection holding 10 % of the rows,
while an exact scan of its 10,000 rows takes about 8 ms and finds them all.

So the plan is chosen per query from the planner's estimate of the rows the collections hold:

- up to ``EXACT_ALWAYS_ROWS``: an exact scan, as quick as the index there and never wrong;
- at least ``INDEX_MIN_SHARE`` of the model's rows: the index, ``ef_search`` raised in proportion
  to the rows the filter drops (a collection that is most of the table loses little to the
  filter, and its exact scan grows with it: 27 ms p50 at 10,000 rows in ``bench retrieval``,
  where the index takes a few);
- otherwise up to ``EXACT_MAX_ROWS``: an exact scan (the rows read through the b-tree on
  collection and model, every one compared);
- past that: the index with iterative scans where the server has them (pgvector 0.8+), else an
  exact scan: slower, never wrong.

The search falls back to an exact scan whenever the index comes back short anyway (rag.sql,
rag.hybrid). The estimates are the planner's own (EXPLAIN, from the table's statistics), kept a
minute per process.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.db import connection

from rag.models import Chunk

# Rows so few that an exact scan costs about what the index does (the demo corpus's 781: ~1 ms).
EXACT_ALWAYS_ROWS = 2_000
# Rows an exact scan compares within the 20 ms a search may take here: 10,000 rows took 8 ms
# (p50; the HNSW scan of the whole 100k-row table 2 ms), 1,000 rows under 1 ms (bench filtered).
EXACT_MAX_ROWS = 20_000
# Above this share of the table the index's candidates hold enough of the collections' rows.
INDEX_MIN_SHARE = 0.5
EF_SEARCH = 200
EF_SEARCH_MAX = 1000  # pgvector's limit
ITERATIVE_VERSION = (0, 8, 0)
ESTIMATE_SECONDS = 60.0
_ESTIMATES_KEPT = 1000

# The clock of the estimates' lifetime; tests swap it.
timer: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class Plan:
    exact: bool
    ef_search: int = EF_SEARCH
    iterative: bool = False
    rows: int = 0  # the estimate it was chosen by

    def describe(self) -> str:
        if self.exact:
            return f"exact scan (~{self.rows} rows)"
        how = "iterative " if self.iterative else ""
        return f"HNSW {how}ef_search {self.ef_search} (~{self.rows} rows)"


def choose(collection_ids: Sequence[int], model_name: str) -> Plan:
    """The plan for the nearest chunks of ``collection_ids`` embedded by ``model_name``."""
    rows, total = estimate(collection_ids, model_name)
    if rows <= EXACT_ALWAYS_ROWS:
        return Plan(exact=True, rows=rows)
    share = rows / max(total, rows)
    if share >= INDEX_MIN_SHARE:
        return Plan(exact=False, ef_search=min(EF_SEARCH_MAX, math.ceil(EF_SEARCH / share)), rows=rows)
    if rows <= EXACT_MAX_ROWS:
        return Plan(exact=True, rows=rows)
    if iterative_scans():
        return Plan(exact=False, iterative=True, rows=rows)
    return Plan(exact=True, rows=rows)


_estimates: dict[tuple[str, tuple[int, ...]], tuple[float, int, int]] = {}


def estimate(collection_ids: Sequence[int], model_name: str) -> tuple[int, int]:
    """(rows of the collections, rows of the model) as the planner estimates them."""
    key = (model_name, tuple(sorted(collection_ids)))
    now = timer()
    kept = _estimates.get(key)
    if kept is not None and kept[0] > now:
        return kept[1], kept[2]
    table = Chunk._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {table} WHERE embedding_model = %s AND collection_id = ANY(%s)",
            [model_name, list(key[1])],
        )
        rows = int(_plan_rows(cursor.fetchone()[0]))
        cursor.execute(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {table} WHERE embedding_model = %s", [model_name])
        total = int(_plan_rows(cursor.fetchone()[0]))
    if len(_estimates) >= _ESTIMATES_KEPT:
        _estimates.clear()
    _estimates[key] = (now + ESTIMATE_SECONDS, rows, total)
    return rows, total


def _plan_rows(explained: object) -> float:
    if isinstance(explained, str | bytes):
        explained = json.loads(explained)
    return explained[0]["Plan"]["Plan Rows"]  # type: ignore[index]


def forget_estimates() -> None:
    _estimates.clear()


_iterative: dict[str, bool] = {}


def iterative_scans() -> bool:
    """Whether the server's pgvector has iterative index scans (0.8+); asked once per process."""
    alias = connection.alias
    if alias not in _iterative:
        with connection.cursor() as cursor:
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = cursor.fetchone()
        _iterative[alias] = version_tuple(row[0] if row else "0") >= ITERATIVE_VERSION
    return _iterative[alias]


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in version.split(".")[:3])
