"""Answer writers: extractive (the default, no model) and Ollama chat.

The extractive answer picks the sentences of the retrieved passages that share the most words
with the question, favouring better-ranked passages, and cites each with its source number.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from rag.chunking import prose_sentences
from rag.retrieval import RetrievedChunk
from rag.text import content_words, stem
from resilience import config
from resilience.client import get_client

PROMPT_VERSION = "1"
SYSTEM_PROMPT = (
    "You answer questions using only the numbered context passages. Cite the passages you use "
    "with their numbers in square brackets, like [1] or [2][3]. If the passages do not contain "
    "the answer, say that you do not know. Be concise."
)


def extractive_answer(question: str, chunks: Sequence[RetrievedChunk], *, max_sentences: int = 3) -> str:
    """The sentences that best answer the question, each followed by its source number."""
    if not chunks:
        return ""
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
    best = sorted(candidates, key=lambda c: (-c[0], c[1], c[2]))[:max_sentences]
    # Read in source order so the answer flows as the passages do.
    best.sort(key=lambda c: (c[1], c[2]))
    return " ".join(f"{sentence} [{number}]" for _, number, _, sentence in best)


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
