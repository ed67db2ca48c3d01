"""Answer writers: extractive (the default, no model) and Ollama chat; whether to answer at all.

The extractive answer picks, from the best passages, the sentences whose meaning is closest to
the question (their vectors were compared with the question's by the reranker: no model call
here), keeps them in document order and cites each with its source number. Without sentence
vectors (degraded, full-text only) it falls back to the sentences sharing the most words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

from rag.chunking import prose_sentences, sentence_leads
from rag.retrieval import RetrievedChunk
from rag.text import content_words, fold_spaces, stem
from resilience import config
from resilience.client import get_client

# How answers are written (the prompt, or how the extractive answer picks its sentences): cached
# answers record it, and one written another way is not served. (4: a passage two documents hold
# is one source; 5: a sentence is led by the signature it defines.)
PROMPT_VERSION = "5"
SYSTEM_PROMPT = (
    "You answer questions using only the numbered context passages, never your own knowledge. "
    "Cite the passages you use with their numbers in square brackets, like [1] or [2][3], and only "
    "numbers that appear before a passage. If the passages do not hold the answer, say plainly that "
    "the documents do not answer the question, and nothing else. Be concise."
)
# Sentences within this much of the best one's similarity may join it in an extractive answer.
SENTENCE_MARGIN = 0.1
ANSWER_SOURCES = 3

_CITATION = re.compile(r"\[(\d{1,3})\]")
# A document's own footnote marker ("all cased characters [4] in the string"): quoted in an answer it
# would read as a citation of source 4. A subscript ("a[1]", no space) or a list ("= [1]") is kept.
_FOOTNOTE = re.compile(r"(?<=[\w\"'\u201d\u2019.,;:)])\s+\[\d{1,3}\](?![\w(\[])")


def invalid_citations(answer: str, passages: int) -> list[int]:
    """The [n] an answer cites that number no passage."""
    return sorted({int(n) for n in _CITATION.findall(answer) if not 1 <= int(n) <= passages})


def extractive_answer(question: str, chunks: Sequence[RetrievedChunk], *, max_sentences: int = 3) -> str:
    """The sentences that best answer the question, in document order, each followed by its source number."""
    if not chunks:
        return ""
    by_meaning = [
        (similarity, number, position, text)
        for number, chunk in enumerate(chunks[:ANSWER_SOURCES], start=1)
        for position, text, similarity in chunk.sentences
    ]
    if by_meaning:
        top = max(similarity for similarity, *_ in by_meaning)
        best = sorted((c for c in by_meaning if c[0] >= top - SENTENCE_MARGIN), key=lambda c: (-c[0], c[1], c[2]))
        best = sorted(_once(best)[:max_sentences], key=lambda c: (c[1], c[2]))
        return _cited([(number, sentence) for _, number, _, sentence in best], chunks)
    return _by_words(question, chunks, max_sentences=max_sentences)


def _cited(picked: list[tuple[int, str]], chunks: Sequence[RetrievedChunk]) -> str:
    """The answer: each sentence followed by its source number, and led by the signature it
    defines, once (rag.chunking.sentence_leads): "str.splitlines(keepends=False): Return a list of
    the lines in the string, ..." names what the sentence alone does not. The documents' own
    footnote markers are left out: the only [n] in an extractive answer are its citations."""
    leads = {number: sentence_leads(chunks[number - 1].text) for number in {number for number, _ in picked}}
    said: set[str] = set()
    parts = []
    for number, sentence in picked:
        lead = leads[number].get(sentence)
        if lead and lead not in said:
            said.add(lead)
            sentence = f"{lead}: {sentence}"
        parts.append(f"{_FOOTNOTE.sub('', sentence)} [{number}]")
    return " ".join(parts)


def _once(ranked: list[tuple[float, int, int, str]]) -> list[tuple[float, int, int, str]]:
    """Each sentence once, where it ranks best: documents quote each other (a section and the
    chapter holding it, overlapping chunks), and an answer that says the same sentence twice, cited
    twice, tells nothing more."""
    seen: set[str] = set()
    kept = []
    for candidate in ranked:
        key = fold_spaces(candidate[3]).casefold()
        if key not in seen:
            seen.add(key)
            kept.append(candidate)
    return kept


def _by_words(question: str, chunks: Sequence[RetrievedChunk], *, max_sentences: int) -> str:
    terms = {stem(w) for w in content_words(question)}
    candidates: list[tuple[float, int, int, str]] = []
    for number, chunk in enumerate(chunks, start=1):
        for position, sentence in enumerate(prose_sentences(chunk.text)):
            if len(sentence) < 20 or len(sentence) > 600:
                continue
            words = {stem(w) for w in content_words(sentence)}
            overlap = len(terms & words)
            # Rank prior: the retriever's order matters; early sentences of a passage tend to
            # state the definition.
            score = overlap + 1.0 / number + 0.3 / (position + 1)
            if terms:
                score += overlap / math.sqrt(len(words) + 1)
            candidates.append((score, number, position, sentence))
    if not candidates:
        first = chunks[0].text.strip()
        return f"{first[:400]} [1]"
    best = _once(sorted(candidates, key=lambda c: (-c[0], c[1], c[2])))[:max_sentences]
    # Read in source order so the answer flows as the passages do.
    best.sort(key=lambda c: (c[1], c[2]))
    return _cited([(number, sentence) for _, number, _, sentence in best], chunks)


def build_messages(question: str, chunks: Sequence[RetrievedChunk]) -> list[dict[str, str]]:
    context = "\n\n".join(
        f"[{number}] {chunk.heading or chunk.title}\n{chunk.text}" for number, chunk in enumerate(chunks, start=1)
    )
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Context passages:\n\n{context}\n\nQuestion: {question}"},
    ]


def _chat_request(question: str, chunks: Sequence[RetrievedChunk]) -> dict[str, Any]:
    """The one chat request both answer paths send: messages, model and options."""
    provider = config.current().provider
    return {
        "messages": build_messages(question, chunks),
        "model": provider.generation_model,
        "options": {"num_ctx": provider.num_ctx, "temperature": 0.1},
        "keep_alive": provider.keep_alive,
    }


def ollama_answer(question: str, chunks: Sequence[RetrievedChunk]) -> str:
    """Ask Ollama's chat endpoint; raises resilience.errors.OllamaError when it cannot answer."""
    return get_client().chat(**_chat_request(question, chunks)).content.strip()


def ollama_stream(question: str, chunks: Sequence[RetrievedChunk]) -> Iterator[str]:
    """The answer's pieces as Ollama streams them; OllamaError before or between pieces."""
    return get_client().chat_stream(**_chat_request(question, chunks))
