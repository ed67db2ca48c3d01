"""Relevance floors chosen from a golden set (``manage.py calibrate``).

Declining (rag.declining) reads two signals of a question: how similar the closest sentence is
(the sources' best, or the collections' closest), and the share of its words that no chunk holds.
Each question of the set is retrieved as an answer would be (no answer cache) and its two signals
kept; then every pair of floors between the observed similarities is tried, and each pair's
declines are counted against the set's ``answerable`` marks. The pair recommended declines the
most unanswerable questions while the precision of declining stays at or above the target; ties
go to the fewest answerable questions declined, then to the lowest floors (the fewest answers
withheld at the margin). The floors depend on the embedding model's vectors: calibrate again
after changing it.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.conf import settings

from rag import declining, golden, visibility
from rag.embeddings import get_embedder
from rag.retrieval import hybrid_search

# A question no passage matched at all is declined whatever the floors (rag.results.NO_MATCH).
NO_PASSAGE = -1.0


class CalibrationError(Exception):
    """The set or the service cannot calibrate floors (the message says why)."""


@dataclass(frozen=True)
class Signal:
    question: str
    answerable: bool
    similarity: float  # of the closest sentence to the question
    unknown_share: float  # of the question's words that no chunk holds


@dataclass(frozen=True)
class Outcome:
    """What a pair of floors does to a set: how many questions it declines, rightly or not."""

    floor: float
    floor_unknown_words: float
    right: int  # unanswerable questions declined
    wrong: int  # answerable questions declined
    unanswerable: int

    @property
    def precision(self) -> float | None:
        declined = self.right + self.wrong
        return self.right / declined if declined else None

    @property
    def recall(self) -> float:
        return self.right / self.unanswerable if self.unanswerable else 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        precision = self.precision
        return {
            "floor": self.floor,
            "floor_unknown_words": self.floor_unknown_words,
            "declined": self.right + self.wrong,
            "answerable_declined": self.wrong,
            "precision": None if precision is None else round(precision, 4),
            "recall": round(self.recall, 4),
        }


def signals(
    questions: Sequence[golden.GoldenQuestion],
    *,
    collection_name: str,
    k: int,
    progress: Callable[[], None] | None = None,
) -> list[Signal]:
    """Each question's two signals, retrieved as ``POST /api/query`` would with ``k`` sources.

    Raises CalibrationError when reranking is off (declining then reads nothing) and lets the
    embedder's errors through (an Ollama model that cannot be reached).
    """
    if not settings.RAGSITE_RERANK:
        raise CalibrationError("reranking is off (RAGSITE_RERANK): declining has no sentence similarities to read")
    collections = visibility.resolve(visibility.OPERATOR, [collection_name])
    embedder = get_embedder()
    found = []
    for item in questions:
        vector = embedder.embed([item.question])[0]
        sources = hybrid_search(collections, item.question, k, model_name=embedder.name, query_vector=vector)
        best = declining.relevance(sources)
        nearest = declining.nearest_sentence(collections, model_name=embedder.name, query_vector=vector)
        similarity = max([value for value in (best, nearest) if value is not None], default=NO_PASSAGE)
        if not sources:
            similarity = NO_PASSAGE
        unknown = declining.unknown_share(collections.ids, item.question)
        found.append(Signal(item.question, item.answerable, similarity, unknown))
        if progress:
            progress()
    return found


def outcome(found: Sequence[Signal], *, floor: float, floor_unknown_words: float) -> Outcome:
    """What these floors decline of ``found``, by the rule declining applies."""
    right = wrong = 0
    for signal in found:
        declined = signal.similarity == NO_PASSAGE or declining.below_floors(
            signal.similarity,
            lambda s=signal: s.unknown_share,
            floor=floor,
            floor_unknown_words=floor_unknown_words,
        )
        if declined and signal.answerable:
            wrong += 1
        elif declined:
            right += 1
    unanswerable = sum(not s.answerable for s in found)
    return Outcome(floor, floor_unknown_words, right, wrong, unanswerable)


def _levels(found: Sequence[Signal]) -> list[float]:
    """The floors worth trying: 0, and just above each observed similarity (three decimals), so
    that each level declines one more group of questions than the one below it."""
    above = {math.floor(s.similarity * 1000 + 1e-9) / 1000 + 0.001 for s in found if s.similarity > NO_PASSAGE}
    return sorted({0.0, *(round(level, 3) for level in above)})


def frontier(found: Sequence[Signal]) -> list[Outcome]:
    """For each number of unanswerable questions some pair of floors declines, the pair that does
    so declining the fewest answerable ones, each floor in the middle of its gap (``centred``):
    the trade-off a set allows.

    Every pair of levels is tried, each counted in constant time: a question of mostly unknown
    words is declined below the upper floor (never below the floor alone, the upper one is at
    least as high), any other below the floor, so each floor's declines are a count of the
    similarities below it among its own questions (``_Below``).
    """
    judged = [s for s in found if s.similarity > NO_PASSAGE]
    always = [s for s in found if s.similarity == NO_PASSAGE]
    known = _Below([s for s in judged if s.unknown_share < declining.UNKNOWN_SHARE])
    unknown = _Below([s for s in judged if s.unknown_share >= declining.UNKNOWN_SHARE])
    right0, wrong0 = sum(not s.answerable for s in always), sum(s.answerable for s in always)
    unanswerable = sum(not s.answerable for s in found)
    best: dict[int, Outcome] = {}
    levels = _levels(found)
    for i, floor in enumerate(levels):
        right1, wrong1 = known.at(floor)
        for upper in levels[i:]:
            right2, wrong2 = unknown.at(upper)
            right, wrong = right0 + right1 + right2, wrong0 + wrong1 + wrong2
            kept = best.get(right)
            if kept is None or wrong < kept.wrong:
                best[right] = Outcome(floor, upper, right, wrong, unanswerable)
    # A pair that declines more unanswerable questions for no more answerable ones hides the others.
    rows = sorted(best.values(), key=lambda o: o.right)
    kept = [row for i, row in enumerate(rows) if not any(later.wrong <= row.wrong for later in rows[i + 1 :])]
    return [centred(found, row) for row in kept]


class _Below:
    """How many of some questions, unanswerable and answerable, are less similar than a level."""

    def __init__(self, found: Sequence[Signal]) -> None:
        ordered = sorted(found, key=lambda s: s.similarity)
        self.similarities = [s.similarity for s in ordered]
        self.right = list(itertools.accumulate((not s.answerable for s in ordered), initial=0))
        self.wrong = list(itertools.accumulate((s.answerable for s in ordered), initial=0))

    def at(self, level: float) -> tuple[int, int]:
        below = bisect.bisect_left(self.similarities, level)
        return self.right[below], self.wrong[below]


def recommend(found: Sequence[Signal], *, min_precision: float) -> Outcome | None:
    """The pair declining the most unanswerable questions at ``min_precision`` or better (None
    when no pair declines any at that precision), each floor moved to the middle of the gap in
    which it declines the same questions: as far as the set allows from the questions on either
    side, which new questions will fall around."""
    fit = [o for o in frontier(found) if o.right and (o.precision or 0.0) >= min_precision]
    return max(fit, key=lambda o: o.right) if fit else None


def centred(found: Sequence[Signal], chosen: Outcome) -> Outcome:
    """``chosen`` with each floor in the middle of its gap (see ``recommend``).

    The two floors judge different questions: one whose words are mostly unknown is declined
    below the higher of the two, any other below the floor alone. So each floor's gap is between
    the closest of its own questions that it declines and the closest that it keeps.
    """
    floor, upper = chosen.floor, max(chosen.floor, chosen.floor_unknown_words)
    judged = [s for s in found if s.similarity > NO_PASSAGE]
    unknown = [s.similarity for s in judged if s.unknown_share >= declining.UNKNOWN_SHARE]
    known = [s.similarity for s in judged if s.unknown_share < declining.UNKNOWN_SHARE]
    new_floor = _middle(known, floor)
    new_upper = max(_middle(unknown, upper), new_floor)
    moved = outcome(found, floor=new_floor, floor_unknown_words=new_upper)
    return moved if (moved.right, moved.wrong) == (chosen.right, chosen.wrong) else chosen


def _middle(similarities: list[float], level: float) -> float:
    """The middle of the gap around ``level`` between the similarities below it and those at or
    above it (three decimals)."""
    low = max((v for v in similarities if v < level), default=0.0)
    high = min((v for v in similarities if v >= level), default=1.0)
    return round((low + high) / 2, 3)


def check(questions: Sequence[golden.GoldenQuestion]) -> None:
    """A set calibrates only with questions of both kinds."""
    if all(q.answerable for q in questions):
        raise CalibrationError('the set has no unanswerable question ("answerable": false): nothing to decline')
    if not any(q.answerable for q in questions):
        raise CalibrationError("the set has no answerable question: any floor would look right")
