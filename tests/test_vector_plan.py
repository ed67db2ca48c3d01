"""Vector search limited to some collections finds their true nearest chunks, whatever their share
of the table: an exact scan for few rows, the HNSW index (ef_search raised) for most of the table."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection

from rag import sql, vector_plan
from rag.models import Chunk, Collection, Document
from rag.retrieval import vector_search

pytestmark = pytest.mark.django_db

MODEL = "test/plan-32"
DIMS = 32


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def table(monkeypatch) -> dict:
    """2,000 chunks in three collections (90 %, 9.5 %, 0.5 %), each about its own topics."""
    monkeypatch.setattr(vector_plan, "EXACT_ALWAYS_ROWS", 50)
    monkeypatch.setattr(vector_plan, "EXACT_MAX_ROWS", 150)
    vector_plan.forget_estimates()
    rng = np.random.default_rng(11)
    topics = unit(rng.normal(size=(40, DIMS)))
    rows, vectors = {}, {}
    for name, count, own in (
        ("plan-big", 1800, range(0, 20)),
        ("plan-mid", 190, range(20, 35)),
        ("plan-small", 10, range(35, 40)),
    ):
        collection = Collection.objects.create(name=name)
        document = Document.objects.create(collection=collection, source=name, title=name, sha256="0" * 64)
        picks = rng.choice(list(own), size=count)
        vectors[name] = unit(topics[picks] + rng.normal(0, 0.3, (count, DIMS)))
        chunks = Chunk.objects.bulk_create(
            Chunk(
                collection=collection,
                document=document,
                ordinal=i,
                text=f"{name} {i}",
                embedding=v,
                embedding_model=MODEL,
            )
            for i, v in enumerate(vectors[name])
        )
        rows[name] = (collection.pk, [chunk.pk for chunk in chunks])
    sql.create_hnsw_index(table=Chunk._meta.db_table, prefix="chunk", model_name=MODEL, dimensions=DIMS)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Chunk._meta.db_table}")
    # A question about the big collection's topics: its nearest chunks are all big's.
    return {"rows": rows, "vectors": vectors, "query": unit(topics[3] + rng.normal(0, 0.1, DIMS))}


def truth(table: dict, names: list[str], limit: int) -> list[int]:
    ids = [pk for name in names for pk in table["rows"][name][1]]
    matrix = np.concatenate([table["vectors"][name] for name in names])
    order = np.argsort(-(matrix @ table["query"]))[:limit]
    return [ids[i] for i in order]


def test_the_plan_follows_the_collections_share_of_the_table(table):
    ids = {name: pk for name, (pk, _) in table["rows"].items()}
    small = vector_plan.choose([ids["plan-small"]], MODEL)
    assert small.exact and small.rows < 150
    everything = vector_plan.choose(list(ids.values()), MODEL)
    assert not everything.exact and everything.ef_search >= vector_plan.EF_SEARCH
    big = vector_plan.choose([ids["plan-big"]], MODEL)
    assert not big.exact and big.ef_search > everything.ef_search  # raised for the rows filtered out
    mid = vector_plan.choose([ids["plan-mid"]], MODEL)  # too many rows to scan, too few for the index
    assert mid.exact and not mid.iterative  # pgvector 0.6 here: no iterative index scans


def test_most_of_the_table_goes_through_the_index_even_when_few_enough_to_scan(table, monkeypatch):
    ids = {name: pk for name, (pk, _) in table["rows"].items()}
    monkeypatch.setattr(vector_plan, "EXACT_MAX_ROWS", 5000)
    assert not vector_plan.choose([ids["plan-big"]], MODEL).exact  # 90 % of the table: the index
    assert vector_plan.choose([ids["plan-mid"]], MODEL).exact  # 9.5 %: scanned, the index would miss
    monkeypatch.setattr(vector_plan, "EXACT_ALWAYS_ROWS", 5000)
    assert vector_plan.choose(list(ids.values()), MODEL).exact  # a table this small: scanned whole


@pytest.mark.parametrize("names", [["plan-small"], ["plan-mid"], ["plan-small", "plan-mid"], ["plan-big"]])
def test_a_filtered_search_finds_the_true_nearest_chunks(table, names):
    collection_ids = [table["rows"][name][0] for name in names]
    found = [chunk_id for chunk_id, _ in vector_search(collection_ids, MODEL, table["query"], 10)]
    expected = truth(table, names, 10)
    assert len(set(found) & set(expected)) >= 9, (found, expected)
    if names != ["plan-big"]:
        assert found == expected  # an exact scan: all of them, in order


def test_filtering_after_the_index_scan_alone_would_have_lost_them(table):
    """What the plan avoids: the HNSW candidates are the big collection's, the filter drops them all."""
    small = table["rows"]["plan-small"][0]
    literal = sql.vector_literal(table["query"])
    with connection.cursor() as cursor:
        cursor.execute(
            f"SET LOCAL enable_sort = off; SET LOCAL hnsw.ef_search = 40; SELECT id FROM {Chunk._meta.db_table} "
            f"WHERE embedding_model = %s AND collection_id = ANY(%s) "
            f"ORDER BY (embedding::vector({DIMS})) <=> %s::vector({DIMS}) LIMIT 10",
            [MODEL, [small], literal],
        )
        cursor.nextset()
        cursor.nextset()
        assert len(cursor.fetchall()) < 10
    assert len(vector_search([small], MODEL, table["query"], 10)) == 10


def test_iterative_scans_are_used_from_pgvector_0_8():
    assert vector_plan.version_tuple("0.8.0") >= vector_plan.ITERATIVE_VERSION
    assert vector_plan.version_tuple("0.6.2") < vector_plan.ITERATIVE_VERSION
    assert vector_plan.version_tuple("0.10.1-dev") >= vector_plan.ITERATIVE_VERSION
