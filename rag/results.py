"""An answer as the API returns it, and the events of a streamed answer (NDJSON lines):
``meta`` (sources and flags), ``token``s, then ``done`` or ``error``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rag.models import CacheOutcome
from rag.retrieval import RetrievedChunk

NO_MATCH = "No passage in this collection matches the question."
# Said instead of an answer when even the best passage is below the relevance floor: the closest
# passages are still listed, as such, never cited.
NOT_COVERED = (
    "The documents do not cover this question: no passage answers it. The closest passages are listed, "
    "but they are not an answer."
)


@dataclass
class Answer:
    question: str
    answer: str
    sources: list[RetrievedChunk]
    collection: str  # the names as one string: "default", or "eng,hr" for several
    collections: list[str] = field(default_factory=list)  # the names, sorted
    cache: CacheOutcome = CacheOutcome.MISS
    degraded: bool = False
    degraded_reason: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    generator: str = "extractive"
    stale: bool = False  # a cached answer past its TTL, served because generation is down
    matched_question: str | None = None  # the cached question a semantic hit answered
    similarity: float | None = None
    answerable: bool = True  # false: the documents do not cover the question (sources are the closest)
    query_id: int | None = None  # the query log's row: what feedback refers to
    invalid_citations: list[int] = field(default_factory=list)  # [n] of a generated answer with no passage n

    def degrade(self, reason: str) -> None:
        self.degraded = True
        self.degraded_reason = f"{self.degraded_reason}; {reason}" if self.degraded_reason else reason

    def meta_event(self) -> dict[str, Any]:
        return {
            "type": "meta",
            "question": self.question,
            "collection": self.collection,
            "collections": self.collections,
            "sources": [chunk.as_source() for chunk in self.sources],
            "cache": self.cache,
            "degraded": self.degraded,
            "degraded_reason": self.degraded_reason,
            "stale": self.stale,
            "answerable": self.answerable,
            "query_id": self.query_id,
        }

    def done_event(self) -> dict[str, Any]:
        return {
            "type": "done",
            "answer": self.answer,
            "generator": self.generator,
            "cache": self.cache,
            "degraded": self.degraded,
            "degraded_reason": self.degraded_reason,
            "timings_ms": self.timings_ms,
            "answerable": self.answerable,
            "query_id": self.query_id,
            "invalid_citations": self.invalid_citations,
        }


def token_event(text: str) -> dict[str, Any]:
    return {"type": "token", "text": text}


def error_event(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"code": code, "message": message}}


def pieces(text: str) -> Iterator[str]:
    """Word-sized pieces that join back to exactly ``text`` (a cached or extractive answer, streamed)."""
    words = text.split(" ")
    for index in range(0, len(words), 3):
        piece = " ".join(words[index : index + 3])
        yield piece if index + 3 >= len(words) else piece + " "
