import pytest

from rag.embeddings import get_embedder
from rag.retrieval import fuse, hybrid_search

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("question", "topic"),
    [
        ("What does the yield statement do?", "pydoc:yield"),
        ("What is a lambda expression?", "pydoc:lambda"),
        ("What does the global statement do?", "pydoc:global"),
        ("How does slicing select items of a sequence?", "pydoc:slicings"),
        ("How do I raise an exception?", "pydoc:raise"),
    ],
)
def test_hybrid_search_ranks_the_right_topic_first(demo_corpus, question, topic):
    embedder = get_embedder()
    vector = embedder.embed([question])[0]
    results = hybrid_search(demo_corpus, question, 5, model_name=embedder.name, query_vector=vector)
    assert results[0].source == topic
    assert len(results) == 5


def test_full_text_alone_still_finds_the_topic(demo_corpus):
    results = hybrid_search(demo_corpus, "yield statement generator", 5)
    assert "pydoc:yield" in [r.source for r in results[:3]]
    # Without a vector only chunks holding the words can be found.
    assert all({"yield", "statement", "generator"} & set(r.text.lower().replace('"', " ").split()) for r in results)


def test_a_chunk_found_by_both_lists_beats_one_found_by_one():
    fused = fuse([[1, 2, 3], [3, 4, 5]], 5)
    assert [chunk_id for chunk_id, _ in fused] == [3, 1, 2, 4, 5]
    assert fused[0][1] == pytest.approx(1 / 63 + 1 / 61)


def test_vectors_of_another_model_are_never_compared(demo_corpus):
    embedder = get_embedder()
    vector = embedder.embed(["What does the yield statement do?"])[0]
    results = hybrid_search(demo_corpus, "zzzz qqqq", 5, model_name="ollama/other-model", query_vector=vector)
    assert results == []
