import json
import logging
import random
import statistics
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from rag import hybrid
from rag.answers import answer_question
from rag.embeddings import get_embedder
from rag.hybrid import MAX_QUERY_TERMS
from rag.models import Collection
from rag.query import search_text
from rag.ranking import Candidate, diversify
from rag.retrieval import fuse, hybrid_search, query_terms, text_search, vector_search
from rag.visibility import OPERATOR, CollectionSet, resolve

pytestmark = pytest.mark.django_db


def scope(collection: Collection) -> CollectionSet:
    return resolve(OPERATOR, [collection.name])


@pytest.mark.parametrize(
    ("question", "topic"),
    [
        ("What does the yield statement do?", "pydoc:yield"),
        ("What does the global statement do?", "pydoc:global"),
        ("How does slicing select items of a sequence?", "pydoc:slicings"),
        ("How do I raise an exception?", "pydoc:raise"),
    ],
)
def test_hybrid_search_ranks_the_right_topic_first(demo_corpus, question, topic):
    embedder = get_embedder()
    vector = embedder.embed([question])[0]
    results = hybrid_search(scope(demo_corpus), question, 5, model_name=embedder.name, query_vector=vector)
    assert results[0].source == topic
    assert len(results) == 5


def test_a_topic_that_a_longer_document_also_covers_is_still_among_the_first(demo_corpus):
    # The function definitions section defines lambda expressions too, in one closer sentence.
    embedder = get_embedder()
    question = "What is a lambda expression?"
    results = hybrid_search(
        scope(demo_corpus), question, 5, model_name=embedder.name, query_vector=embedder.embed([question])[0]
    )
    assert "pydoc:lambda" in [r.source for r in results[:2]]


def test_full_text_alone_still_finds_the_topic(demo_corpus):
    results = hybrid_search(scope(demo_corpus), "yield statement generator", 5)
    assert "pydoc:yield" in [r.source for r in results[:3]]
    # Without a vector only chunks holding the words (in their text or headings) can be found.
    words = ("yield", "statement", "generator")
    assert all(any(w in f"{r.heading} {r.text}".lower() for w in words) for r in results)


def test_a_chunk_found_by_both_lists_beats_one_found_by_one():
    fused = fuse([[1, 2, 3], [3, 4, 5]], 5)
    assert [chunk_id for chunk_id, _ in fused] == [3, 1, 2, 4, 5]
    assert fused[0][1] == pytest.approx(1 / 63 + 1 / 61)


def test_vectors_of_another_model_are_never_compared(demo_corpus):
    embedder = get_embedder()
    vector = embedder.embed(["What does the yield statement do?"])[0]
    results = hybrid_search(scope(demo_corpus), "zzzz qqqq", 5, model_name="ollama/other-model", query_vector=vector)
    assert results == []


# LONG QUESTIONS: bounded full-text work

_COMMON = (
    "the a is of and to in value function object type name used call list string method class attribute "
    "module statement expression argument return defined following other example number element sequence "
    "instance operation result variable first also new set called may must"
)
COMMON_WORDS = _COMMON.split()


def long_question(length: int = 2000) -> str:
    """A question of common words, as long as a question may be."""
    rnd = random.Random(7)
    words: list[str] = []
    while len(" ".join(words)) < length:
        words.append(rnd.choice(COMMON_WORDS))
    return " ".join(words)[:length].strip()


def median_seconds(question: str, runs: int = 5) -> float:
    answer_question(question=question, caller=OPERATOR, use_cache=False)  # the question's embedding is cached now
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        answer_question(question=question, caller=OPERATOR, use_cache=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def test_a_long_question_costs_about_what_a_short_one_does(demo_corpus):
    question = long_question()
    assert len(question) >= 1990
    short = median_seconds("What does the yield statement do?")
    long = median_seconds(question)
    assert long < 3 * short, f"long {long * 1000:.1f} ms, short {short * 1000:.1f} ms"


def test_full_text_search_asks_for_the_rarest_distinct_terms_only(demo_corpus):
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE rag_chunk")  # the column's statistics say which words are rare
    # A word no chunk holds is the rarest of all: it is kept, whatever the common words around it.
    terms = query_terms(f"{long_question()} walrus").split(" | ")
    assert len(terms) == MAX_QUERY_TERMS == len(set(terms))
    assert terms[0] == "'walrus'"
    # Of two known words the rarer comes first ("yield" is in fewer chunks than "statement").
    assert query_terms("What does the yield statement do? Yield, yield!") == "'yield' | 'statement'"
    assert query_terms("the of and") == ""


def _holding(ids: list[int], query: str) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM rag_chunk WHERE id = ANY(%s) AND search_vector @@ to_tsquery('english', %s)", [ids, query]
        )
        return sorted(row[0] for row in cursor.fetchall())


def test_full_text_ranking_is_the_full_one_while_the_matches_fit_its_pool(demo_corpus, monkeypatch):
    question = "How does a generator function yield values to the caller?"
    query = query_terms(question)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM rag_chunk WHERE collection_id = %s AND search_vector @@ %s::tsquery "
            "ORDER BY ts_rank_cd(search_vector, %s::tsquery, 32) DESC, id",
            [demo_corpus.pk, query, query],
        )
        every_match = [row[0] for row in cursor.fetchall()]
    assert len(every_match) > 20
    monkeypatch.setattr(hybrid, "TEXT_POOL", len(every_match))  # they just fit
    assert [chunk_id for chunk_id, _ in text_search([demo_corpus.pk], question, 20)] == every_match[:20]


def test_a_full_pool_is_filled_by_the_chunks_holding_every_word_then_the_rarest(demo_corpus, monkeypatch):
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE rag_chunk")
    monkeypatch.setattr(hybrid, "TEXT_POOL", 5)
    found = [chunk_id for chunk_id, _ in text_search([demo_corpus.pk], "yield statement generator", 5)]
    assert len(found) == 5
    every_word = _holding(list(demo_corpus.documents.values_list("chunks", flat=True)), "yield & statement & generator")
    assert 0 < len(every_word) < 5 and set(every_word) <= set(found)
    # The rest hold the rarest of the three words.
    assert _holding(found, "generator") == sorted(found)
    # No chunk holds every word: the rarest known word ("yield", not "statement") fills the pool.
    found = [chunk_id for chunk_id, _ in text_search([demo_corpus.pk], "yield statement walrus", 5)]
    assert len(found) == 5
    assert _holding(found, "yield") == sorted(found)


def test_hybrid_retrieval_reads_the_chunks_in_one_statement(demo_corpus):
    embedder = get_embedder()
    question = "What does the yield statement do?"
    vector = embedder.embed([question])[0]
    hybrid_search(scope(demo_corpus), question, 5, model_name=embedder.name, query_vector=vector)
    with CaptureQueriesContext(connection) as queries:
        results = hybrid_search(scope(demo_corpus), question, 5, model_name=embedder.name, query_vector=vector)
    assert results[0].source == "pydoc:yield" and results[0].relevance is not None  # reranked
    reading = [q["sql"] for q in queries.captured_queries if "rag_chunk" in q["sql"] or "rag_sentence" in q["sql"]]
    assert len(reading) == 1, reading


def test_quotes_and_backslashes_in_a_question_are_just_words(demo_corpus):
    results = hybrid_search(scope(demo_corpus), "O'Reilly's yield statement C:\\temp\\x 'quoted' \\", 5)
    assert "pydoc:yield" in [r.source for r in results]


def test_a_cancelled_full_text_search_degrades_to_vector_ranking(client, demo_corpus, settings, caplog):
    settings.RAGSITE_RETRIEVAL_TIMEOUT_MS = 1
    question = long_question()
    embedder = get_embedder()
    vector = embedder.embed([question])[0]
    with caplog.at_level(logging.WARNING, logger="rag.retrieval"):
        results = hybrid_search(scope(demo_corpus), question, 5, model_name=embedder.name, query_vector=vector)
    assert "full-text search cancelled after 1 ms" in caplog.text
    assert len(results) == 5
    nearest = [chunk_id for chunk_id, _ in vector_search([demo_corpus.pk], embedder.name, vector, 20)]
    assert {r.chunk_id for r in results} <= set(nearest)  # the vector ranking alone
    # The API answers instead of failing, and the limit did not outlive the search.
    response = client.post(
        "/api/query", json.dumps({"question": question, "use_cache": False}), content_type="application/json"
    )
    assert response.status_code == 200 and len(response.json()["sources"]) == 5
    # It says it is degraded, and why (and is not cached as if it were the full answer).
    assert response.json()["degraded"] is True
    assert "full-text search timed out" in response.json()["degraded_reason"]
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "0"


def test_one_document_takes_one_place_and_the_first_five_of_ten_are_the_five(demo_corpus):
    embedder = get_embedder()
    question = "What does the yield statement do?"
    vector = embedder.embed([question])[0]
    five = hybrid_search(scope(demo_corpus), question, 5, model_name=embedder.name, query_vector=vector)
    ten = hybrid_search(scope(demo_corpus), question, 10, model_name=embedder.name, query_vector=vector)
    assert len({r.document_id for r in ten}) == 10
    assert [r.chunk_id for r in ten[:5]] == [r.chunk_id for r in five]


def test_neighbouring_chunks_of_a_document_are_merged_into_one_source():
    def chunk(chunk_id: int, document_id: int, ordinal: int, text: str) -> Candidate:
        return Candidate(chunk_id, document_id, ordinal, f"doc {document_id}", f"s:{document_id}", text, 1.0)

    found = [
        chunk(11, 1, 1, "Second part.\n\nThird part."),
        chunk(20, 2, 0, "Other document."),
        chunk(10, 1, 0, "First part.\n\nSecond part."),  # the chunk before 11, overlapping it
        chunk(12, 1, 3, "Far away in document 1."),
    ]
    sources = diversify(found, 5, max_per_document=1)
    assert [s.merged for s in sources] == [[10, 11], [20]]
    assert sources[0].text == "First part.\n\nSecond part.\n\nThird part."
    two = diversify(found, 5, max_per_document=2)
    assert [s.merged for s in two] == [[10, 11], [20], [12]]


def test_a_passage_two_documents_hold_is_one_source_naming_the_other():
    def chunk(chunk_id: int, document_id: int, ordinal: int, text: str) -> Candidate:
        return Candidate(chunk_id, document_id, ordinal, f"doc {document_id}", f"s:{document_id}", text, 1.0)

    found = [
        chunk(10, 1, 4, "The with statement wraps a block."),  # a chapter quoting its section
        chunk(20, 2, 0, "The with  statement\nwraps a block."),  # the section: the same words
        chunk(30, 3, 0, "Something else."),
        chunk(21, 2, 1, "The rest of the section."),
        chunk(11, 1, 9, "Far away in the chapter."),
        chunk(40, 4, 2, "The with statement wraps a block."),  # a third copy, past the k-th source
    ]
    sources = diversify(found, 2, max_per_document=1)
    assert [s.merged for s in sources] == [[10], [30]]
    assert sources[0].also_in == [
        {"document_id": 2, "title": "doc 2", "source": "s:2", "collection": ""},
        {"document_id": 4, "title": "doc 4", "source": "s:4", "collection": ""},
    ]
    # The section's other passage is still a source of its own when there is room.
    assert [s.merged for s in diversify(found, 5, max_per_document=1)] == [[10], [30], [21]]

    # A neighbour whose passage another source already shows is not merged in again.
    found = [
        chunk(20, 2, 0, "The with statement wraps a block."),
        chunk(31, 3, 1, "Section three."),
        chunk(30, 3, 0, "The with statement wraps a block."),
    ]
    sources = diversify(found, 5, max_per_document=1)
    assert [s.merged for s in sources] == [[20], [31]]
    assert sources[0].also_in == [{"document_id": 3, "title": "doc 3", "source": "s:3", "collection": ""}]


def test_no_answer_lists_a_passage_twice(client, demo_corpus):
    # The demo's "Compound statements" chapter quotes its sections ("The with statement", ...)
    # word for word: each passage is one source, naming the other document that holds it.
    body = {"question": "How does the with statement work?", "k": 10, "use_cache": False}
    sources = client.post("/api/query", body, content_type="application/json").json()["sources"]
    texts = [" ".join(s["text"].split()) for s in sources]
    assert len(set(texts)) == len(texts) == 10
    named = {other["source"] for s in sources for other in s["also_in"]}
    assert {"pydoc:with", "pydoc:compound"} & named
    for s in sources:
        assert s["source"] not in {other["source"] for other in s["also_in"]}
        assert {other["collection"] for other in s["also_in"]} <= {"default"}


def test_small_typos_and_code_operators_still_reach_the_full_text_search(demo_corpus):
    # Full text alone (no question vector): only the corrected words can find the topic.
    assert hybrid_search(scope(demo_corpus), "asert statment", 3)[0].source == "pydoc:assert"
    assert search_text(scope(demo_corpus), "what does x := 5 do").endswith("assignment expression")
    assert "floor division" in search_text(scope(demo_corpus), "a // b")
    assert search_text(scope(demo_corpus), "What does the yield statement do?") == "What does the yield statement do?"
