"""The reranker's word score: a word few chunks hold counts for more than words every chunk holds."""

from __future__ import annotations

import pytest

from rag.ingestion import ingest_items
from rag.models import Chunk
from rag.query import vocabulary
from rag.ranking import word_scores
from rag.sources import SourceItem
from rag.visibility import OPERATOR, resolve

pytestmark = pytest.mark.django_db

COLLECTION = "ranking-test"
TEXTS = {
    "walrus": "Walrus\n\nThe walrus operator gives a name to a value in the middle of an expression.",
    "statements": "Statements\n\nAn expression statement evaluates an expression. A statement may hold an "
    "expression, and an expression may be a statement of its own.",
    "returns": "Returns\n\nA return statement leaves a function with the value of its expression.",
}


@pytest.fixture
def corpus(resilience_config):
    items = [SourceItem(f"words:{key}", text.encode(), "text/plain", key) for key, text in TEXTS.items()]
    assert not ingest_items(items, collection_name=COLLECTION).failures
    return resolve(OPERATOR, [COLLECTION])


def chunk_of(key: str) -> int:
    return Chunk.objects.get(document__source=f"words:{key}", collection__name=COLLECTION).pk


def test_a_rare_word_outweighs_common_words_repeated(corpus):
    ids = [chunk_of(key) for key in TEXTS]
    scores = word_scores(ids, collections=corpus, text="walrus expression statement", max_terms=12)
    # "statements" holds two of the three words, many times over, but every chunk holds "expression"
    # and most hold "statement": the one chunk holding "walrus" matches better.
    assert scores[chunk_of("walrus")] > scores[chunk_of("statements")] > 0
    assert scores[chunk_of("statements")] > scores[chunk_of("returns")]


def test_words_no_candidate_holds_score_nothing(corpus):
    ids = [chunk_of(key) for key in TEXTS]
    assert word_scores(ids, collections=corpus, text="zeppelin harmonica", max_terms=12) == {}


def test_the_vocabulary_counts_the_chunks_holding_each_word(corpus):
    found = vocabulary(corpus.ids[0], corpus.versions[0])
    assert found.chunks == 3
    assert found.chunks_with["express"] == 3
    assert found.chunks_with["walrus"] == 1
    assert "zeppelin" not in found.chunks_with
