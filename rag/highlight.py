"""Where in a source the question is answered: the span of its sentence closest to the question.

A source's text can start well before what matched (a neighbouring chunk merged in, a long
paragraph), so the API gives the span of its best sentence (``highlight``: start and end offsets
in ``text``) and the search page shows its snippet from there, the sentence marked. Sentences were
stored with their whitespace folded (rag.chunking), so they are found in the text word by word.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rag.text import fold_spaces

# How much of the text before the sentence a snippet keeps (its paragraph's start if nearer), and
# how long a snippet is in all: about the four lines the page shows.
LEAD_CHARS = 120
SNIPPET_CHARS = 600
ELLIPSIS = "…"


def span(text: str, sentence: str) -> list[int] | None:
    """[start, end) of ``sentence`` in ``text``, whatever whitespace separates its words there.

    Walked word by word from each place the first word occurs (no pattern to compile: this runs
    for every source of every answer).
    """
    words = sentence.split()
    if not words:
        return None
    start = text.find(words[0])
    while start >= 0:
        end = _words_from(text, start, words)
        if end is not None:
            return [start, end]
        start = text.find(words[0], start + 1)
    return None


def _words_from(text: str, at: int, words: list[str]) -> int | None:
    """Where ``words`` end if they are found in ``text`` from ``at`` on, one after another, with
    only whitespace (at least some) between them; None otherwise."""
    end = len(text)
    for i, word in enumerate(words):
        if i:
            gap = at
            while at < end and text[at].isspace():
                at += 1
            if at == gap:
                return None
        if not text.startswith(word, at):
            return None
        at += len(word)
    return at


def best_span(text: str, sentences: Sequence[tuple[int, str, float]]) -> list[int] | None:
    """The span of the sentence most similar to the question (None without scored sentences)."""
    for _, sentence, _ in sorted(sentences, key=lambda s: -s[2]):
        found = span(text, sentence)
        if found:
            return found
    return None


class _Source(Protocol):
    text: str
    sentences: list[tuple[int, str, float]]
    highlight: list[int] | None


def mark(sources: Sequence[_Source]) -> None:
    """Set each source's highlight: its sentence closest to the question that no source before it
    marks (two passages can end on the same sentence: each snippet then shows its own), or its
    closest one when every sentence it has is marked already."""
    marked: set[str] = set()
    for source in sources:
        fresh = [s for s in source.sentences if fold_spaces(s[1]) not in marked]
        source.highlight = best_span(source.text, fresh or source.sentences)
        if source.highlight:
            start, end = source.highlight
            marked.add(fold_spaces(source.text[start:end]))


def snippet(text: str, highlight: Sequence[int] | None) -> tuple[str, str, str]:
    """(before, the sentence, after) to show of a source: the whole from its start when nothing
    is highlighted, else from a little before the sentence, each part cut with an ellipsis."""
    if not highlight or not 0 <= highlight[0] < highlight[1] <= len(text):
        return "", "", _cut(text, SNIPPET_CHARS)
    start, end = highlight
    paragraph = text.rfind("\n\n", 0, start)
    lead_from = 0 if paragraph < 0 else paragraph + 2
    if start - lead_from > LEAD_CHARS:
        lead_from = text.find(" ", start - LEAD_CHARS, start) + 1 or start - LEAD_CHARS
    before = (ELLIPSIS if lead_from > 0 else "") + text[lead_from:start]
    marked = text[start:end]
    after = _cut(text[end:], max(0, SNIPPET_CHARS - len(before) - len(marked)))
    return before, marked, after


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + ELLIPSIS
