"""Hybrid retrieval's one SQL statement: both rankings, their fusion, the chunks, what the reranker reads.

The statement, built here and run by rag.retrieval, holds:

- the vector ranking: the chunks of the collections nearest the question, through the model's HNSW
  index or an exact scan as rag.vector_plan chose (an index scan that comes back short is redone
  exactly, inside the statement);
- the full-text ranking over a bounded pool of candidates (below);
- reciprocal rank fusion of the two (``rag.retrieval.RRF_K``);
- the fused chunks' rows with their documents, and for the first ``rag.ranking.RERANK_TOP`` of them
  the chunk's and each sentence's similarity to the question and how often it holds each of the
  question's words (for BM25), so the reranker needs no query.

The collection ids (resolved by rag.visibility) are in both rankings' WHERE clauses.

**The full-text pool.** Ranking every chunk that shares a word with the question costs in
proportion to the collection (at 1M chunks most of two seconds a question). Postgres's GIN index
finds matching rows cheaply but not in rank order, so the statement ranks at most ``TEXT_POOL``
candidates, gathered in this order until the pool is full: the chunks holding every term of the
question, then those holding its rarest term, then its next rarest, and so on (each step skips the
chunks an earlier one took). Rarity is Postgres's own statistics of the column
(``pg_stats.most_common_elems``, kept by ANALYZE): a lexeme it does not list is rarer than every one
it does. A collection whose matching chunks fit in the pool is ranked exactly as a full ranking would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rag import sql
from rag.models import Chunk, Document, Sentence
from rag.vector_plan import Plan

# Candidates the full-text ranking reads per question, whatever the collection's size.
TEXT_POOL = 300
# The question's distinct lexemes searched at most: its rarest (then longest, then earliest). A
# 2000-character question ORed word by word was a 547-node query taking 1.25 s on the demo corpus.
MAX_QUERY_TERMS = 12

_CHUNKS = Chunk._meta.db_table
_DOCUMENTS = Document._meta.db_table
_SENTENCES = Sentence._meta.db_table

# Each lexeme quoted for tsquery input (quotes and backslashes doubled) so it is taken as it is:
# to_tsquery would stem the already stemmed lexemes a second time.
_QUOTED = "'''' || replace(replace(lexeme, '\\', '\\\\'), '''', '''''') || ''''"

_TERMS = f"""
stats AS (
    SELECT u.lexeme, u.share FROM pg_stats s,
        unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs) AS u(lexeme, share)
    WHERE s.schemaname = current_schema() AND s.tablename = '{_CHUNKS}' AND s.attname = 'search_vector'
),
terms AS MATERIALIZED (
    SELECT {_QUOTED} AS quoted, n FROM (
        SELECT t.lexeme, row_number() OVER (
            ORDER BY coalesce(st.share, 0), length(t.lexeme) DESC, t.positions[1]) AS n
        FROM unnest(to_tsvector('english', %(text)s)) AS t(lexeme, positions, weights)
        LEFT JOIN stats st ON st.lexeme = t.lexeme
    ) AS words WHERE n <= %(max_terms)s
),
q AS MATERIALIZED (
    SELECT string_agg(quoted, ' | ' ORDER BY n)::tsquery AS any_term,
        string_agg(quoted, ' & ' ORDER BY n)::tsquery AS every_term FROM terms
)"""

# Arm 0: every term; arm n: the n-th rarest term, without the chunks of the arms before it.
_TEXT = f"""
arms AS (
    SELECT 0::bigint AS n, every_term AS query, NULL::tsquery AS seen FROM q WHERE every_term IS NOT NULL
    UNION ALL
    SELECT n, quoted::tsquery, coalesce(
        (string_agg(quoted, ' | ') OVER (ORDER BY n ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING))::tsquery,
        (SELECT every_term FROM q))
    FROM terms
),
text_pool AS (
    SELECT found.id, found.rank FROM (SELECT * FROM arms ORDER BY n) AS a CROSS JOIN LATERAL (
        SELECT c.id, ts_rank_cd(c.search_vector, (SELECT any_term FROM q), 32) AS rank FROM {_CHUNKS} c
        WHERE c.collection_id = ANY(%(ids)s) AND c.search_vector @@ a.query
            AND (a.seen IS NULL OR NOT c.search_vector @@ a.seen)
        LIMIT %(pool)s
    ) AS found
    LIMIT %(pool)s
),
text_ranked AS (
    SELECT id, rank, row_number() OVER (ORDER BY rank DESC, id) AS place FROM text_pool
    ORDER BY place LIMIT %(limit)s
)"""


@dataclass(frozen=True)
class Statement:
    """The SQL and its parameters; ``settings`` are SET LOCAL statements to run just before it."""

    sql: str
    params: dict[str, Any]
    settings: list[str] = field(default_factory=list)


def _distance(dims: int, column: str = "embedding") -> str:
    return f"(({column}::vector({dims})) <=> (SELECT v FROM question))"


def _vector_ctes(plan: Plan, dims: int) -> str:
    """``vec`` (id, distance): the nearest chunks, through the index or exactly as ``plan`` says."""
    scope = "embedding_model = %(model)s AND collection_id = ANY(%(ids)s)"
    # OFFSET 0 keeps the subquery from being flattened, so the filter is read through its b-tree
    # index and sorted, never through the HNSW index (rag.sql.nearest does the same).
    exact = (
        f"vec_exact AS MATERIALIZED (SELECT id, distance FROM (SELECT id, {_distance(dims)} AS distance "
        f"FROM {_CHUNKS} WHERE {scope} OFFSET 0) AS scoped ORDER BY distance LIMIT %(limit)s)"
    )
    if plan.exact:
        return f"{exact},\nvec AS (SELECT id, distance FROM vec_exact)"
    # pgvector 0.6 filters the index's ef_search candidates afterwards: a selective filter can
    # leave fewer than asked, and the exact scan then runs instead (a one-time filter: only then).
    return (
        f"vec_index AS MATERIALIZED (SELECT id, {_distance(dims)} AS distance FROM {_CHUNKS} "
        f"WHERE {scope} ORDER BY distance LIMIT %(limit)s),\n{exact},\n"
        "vec AS (SELECT id, distance FROM vec_index WHERE (SELECT count(*) FROM vec_index) >= %(limit)s "
        "UNION ALL SELECT id, distance FROM vec_exact WHERE (SELECT count(*) FROM vec_index) < %(limit)s)"
    )


def hybrid(
    *,
    collection_ids: list[int],
    text: str | None,
    model_name: str | None,
    vector: np.ndarray | None,
    plan: Plan | None,
    limit: int,
    fused: int,
    rrf_k: int,
    rerank_top: int,
    scored_words: str | None = None,
) -> Statement:
    """The statement of one retrieval: rows of (id, document_id, ordinal, heading, text,
    collection_id, title, source, fused score, chunk similarity, sentences as JSON, the chunk's
    distinct lexemes, its words as JSON), best first.

    ``text`` None leaves the full-text ranking out, ``vector`` None the vector one (and the
    similarities: they are then NULL). ``rerank_top`` 0 reads no similarities. ``scored_words``:
    the text whose longest ``MAX_QUERY_TERMS`` lexemes the reranker scores by BM25
    (rag.ranking.word_scores): the first ``rerank_top`` rows give [lexeme, occurrences] of those
    they hold.
    """
    params: dict[str, Any] = {
        "ids": list(collection_ids),
        "limit": int(limit),
        "fused": int(fused),
        "rrf_k": int(rrf_k),
        "rerank_top": int(rerank_top),
    }
    ctes: list[str] = []
    ranked: list[str] = []
    settings: list[str] = []
    dims = 0
    if vector is not None:
        assert plan is not None and model_name is not None
        dims = int(vector.shape[0])
        params.update(vector=sql.vector_literal(vector), model=model_name)
        ctes.append(f"question AS MATERIALIZED (SELECT %(vector)s::vector({dims}) AS v)")
        ctes.append(_vector_ctes(plan, dims))
        ranked.append(
            "SELECT id, row_number() OVER (ORDER BY distance, id) AS place, 1 - distance AS similarity FROM vec"
        )
        if not plan.exact:
            settings.append(f"SET LOCAL hnsw.ef_search = {max(int(plan.ef_search), int(limit))}")
            if plan.iterative:
                settings.append("SET LOCAL hnsw.iterative_scan = strict_order")
    if text is not None:
        params.update(text=text, max_terms=MAX_QUERY_TERMS, pool=TEXT_POOL)
        ctes.append(_TERMS.strip())
        ctes.append(_TEXT.strip())
        ranked.append("SELECT id, place, NULL::float8 AS similarity FROM text_ranked")
    assert ranked, "a retrieval needs a vector, a text or both"
    if vector is not None:
        similarity = (
            f"CASE WHEN f.position <= %(rerank_top)s AND c.embedding_model = %(model)s "
            f"THEN 1 - {_distance(dims, 'c.embedding')} END"
        )
        sentences = (
            f"CASE WHEN f.position <= %(rerank_top)s THEN (SELECT json_agg(json_build_array(s.position, s.text, "
            f"1 - {_distance(dims, 's.embedding')}) ORDER BY s.position)::text FROM {_SENTENCES} s "
            "WHERE s.chunk_id = c.id AND s.embedding_model = %(model)s) END"
        )
    else:
        similarity = sentences = "NULL"
    lengths = words = "NULL"
    if scored_words is not None and rerank_top > 0:
        params.update(scored_words=scored_words, max_terms=MAX_QUERY_TERMS)
        ctes.append(
            "scored AS (SELECT lexeme FROM unnest(to_tsvector('english', %(scored_words)s)) "
            "AS t(lexeme, positions, weights) ORDER BY length(lexeme) DESC, positions[1] LIMIT %(max_terms)s)"
        )
        lengths = "length(c.search_vector)"
        words = (
            "CASE WHEN f.position <= %(rerank_top)s THEN (SELECT json_agg(json_build_array(t.lexeme, "
            "coalesce(array_length(t.positions, 1), 1)))::text FROM unnest(c.search_vector) "
            "AS t(lexeme, positions, weights) WHERE t.lexeme IN (SELECT lexeme FROM scored)) END"
        )
    statement = (
        "WITH "
        + ",\n".join(ctes)
        + f""",
ranked AS ({" UNION ALL ".join(ranked)}),
fused AS (
    SELECT id, sum(1.0::float8 / (%(rrf_k)s + place)) AS score, max(similarity) AS similarity
    FROM ranked GROUP BY id ORDER BY score DESC, id LIMIT %(fused)s
)
SELECT c.id, c.document_id, c.ordinal, c.heading, c.text, c.collection_id, d.title, d.source, f.score,
    coalesce(f.similarity, {similarity}), {sentences}, {lengths}, {words}
FROM (SELECT *, row_number() OVER (ORDER BY score DESC, id) AS position FROM fused) AS f
JOIN {_CHUNKS} c ON c.id = f.id JOIN {_DOCUMENTS} d ON d.id = c.document_id
ORDER BY f.position"""
    )
    return Statement(statement, params, settings)


def text_ranking(*, collection_ids: list[int], text: str, limit: int) -> Statement:
    """The full-text ranking alone, as the hybrid statement runs it: rows of (chunk id, rank)."""
    params = {"ids": list(collection_ids), "text": text, "max_terms": MAX_QUERY_TERMS, "pool": TEXT_POOL}
    params["limit"] = int(limit)
    return Statement(
        f"WITH {_TERMS.strip()},\n{_TEXT.strip()}\nSELECT id, rank FROM text_ranked ORDER BY place", params
    )


def query_terms(text: str) -> Statement:
    """The OR query of the full-text ranking, as text."""
    params = {"text": text, "max_terms": MAX_QUERY_TERMS}
    return Statement(f"WITH {_TERMS.strip()}\nSELECT coalesce(any_term::text, '') FROM q", params)
