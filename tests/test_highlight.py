"""The sentence of a source closest to the question: found in its text, marked in its snippet."""

from __future__ import annotations

from rag.highlight import LEAD_CHARS, SNIPPET_CHARS, best_span, mark, snippet, span
from rag.retrieval import RetrievedChunk

TEXT = (
    "Compound statements\n\nThe try statement ends here.\n\n"
    "The with statement is used to wrap\nthe execution of a block. It calls __enter__ first."
)


def test_a_sentence_stored_with_its_whitespace_folded_is_found_in_the_text():
    sentence = "The with statement is used to wrap the execution of a block."
    start, end = span(TEXT, sentence)
    assert TEXT[start:end] == "The with statement is used to wrap\nthe execution of a block."
    assert span(TEXT, "Not in the text at all.") is None


def test_the_best_scored_sentence_that_is_in_the_text_is_the_highlight():
    scored = [(0, "The try statement ends here.", 0.2), (1, "A sentence of another chunk.", 0.9)]
    scored.append((2, "It calls __enter__ first.", 0.7))
    start, end = best_span(TEXT, scored)
    assert TEXT[start:end] == "It calls __enter__ first."
    assert best_span(TEXT, []) is None


def test_the_snippet_starts_at_the_sentences_paragraph_and_marks_it():
    highlight = span(TEXT, "It calls __enter__ first.")
    before, marked, after = snippet(TEXT, highlight)
    assert before.startswith("…The with statement")  # its paragraph, not the merged text's start
    assert marked == "It calls __enter__ first." and after == ""
    # Far into a long paragraph: only a little of what comes before.
    long = "word " * 300 + "The answer is here. " + "more " * 300
    before, marked, after = snippet(long, span(long, "The answer is here."))
    assert before.startswith("…") and len(before) <= LEAD_CHARS + 1
    assert marked == "The answer is here."
    assert after.endswith("…") and len(before) + len(marked) + len(after) <= SNIPPET_CHARS
    # Nothing highlighted (or a span that does not fit the text): the start of the text.
    assert snippet(long, None) == ("", "", long[: SNIPPET_CHARS - 1] + "…")
    assert snippet(TEXT, [5, 10_000]) == ("", "", TEXT)


def test_two_sources_ending_on_the_same_sentence_each_mark_their_own():
    shared = "See the reference for the with statement."
    first = RetrievedChunk(1, 1, "A", "s:a", f"The with statement wraps a block. {shared}", 1.0)
    second = RetrievedChunk(2, 2, "B", "s:b", f"Context managers define __exit__. {shared}", 0.9)
    first.sentences = [(0, "The with statement wraps a block.", 0.5), (1, shared, 0.6)]
    second.sentences = [(0, "Context managers define __exit__.", 0.5), (1, shared, 0.6)]
    mark([first, second])
    assert first.text[slice(*first.highlight)] == shared
    assert second.text[slice(*second.highlight)] == "Context managers define __exit__."
    # Where every sentence is marked already, a source still marks its best.
    third = RetrievedChunk(3, 3, "C", "s:c", shared, 0.8, sentences=[(0, shared, 0.6)])
    mark([first, second, third])
    assert third.text[slice(*third.highlight)] == shared
