"""Cache warming: answer questions ahead of time so that users get cache hits.

Used by ``manage.py warm_cache`` and by the warm-up job. Questions already cached are left alone,
so warming again is safe. Each question is warmed for the very collections it is asked of: a
cached answer is keyed by that exact set, so a question warmed for ("eng", "hr") serves no one who
asks ("hr",). Warming runs as the operator (it may read every collection); who may then be served
an answer is decided at each lookup (rag.visibility).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.db import connections

from rag.answers import answer_question
from rag.models import CacheOutcome
from rag.text import question_hash
from rag.visibility import OPERATOR

Question = tuple[tuple[str, ...], str]  # (collections, question)
# outcome is warmed | cached | failed, with a reason when failed
Outcome = tuple[str, str]


def unique(questions: list[Question]) -> list[Question]:
    """Spellings of one question (same normalised hash) are warmed once."""
    seen: set[tuple[tuple[str, ...], str]] = set()
    out = []
    for collections, question in questions:
        key = (collections, question_hash(question))
        if key not in seen:
            seen.add(key)
            out.append((collections, question))
    return out


def warm_one(job: Question) -> Outcome:
    collections, question = job
    try:
        answer = answer_question(question=question, caller=OPERATOR, collections=list(collections), log_query=False)
    except Exception as exc:  # one bad question must not stop the others
        return "failed", f"{type(exc).__name__}: {exc}"
    if answer.cache in (CacheOutcome.EXACT, CacheOutcome.SEMANTIC) and not answer.stale:
        return "cached", ""
    if answer.degraded:
        return "failed", answer.degraded_reason or "degraded answer (not cached)"
    return "warmed", ""


def _warm_in_thread(job: Question) -> Outcome:
    try:
        return warm_one(job)
    finally:
        connections.close_all()  # this worker thread's connections, not the caller's


def warm_questions(
    questions: list[Question], *, concurrency: int = 1, report: Callable[[Question, Outcome], None] | None = None
) -> list[Outcome]:
    """Answer each question (``concurrency`` at once); ``report`` is told each outcome as it comes."""
    outcomes: list[Outcome] = []
    if concurrency == 1:
        for job in questions:
            outcomes.append(warm_one(job))
            if report:
                report(job, outcomes[-1])
        return outcomes
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="warm") as executor:
        for job, outcome in zip(questions, executor.map(_warm_in_thread, questions), strict=True):
            outcomes.append(outcome)
            if report:
                report(job, outcome)
    return outcomes


def summary(outcomes: list[Outcome], seconds: float) -> tuple[dict[str, int], str]:
    counts = {kind: sum(1 for o, _ in outcomes if o == kind) for kind in ("warmed", "cached", "failed")}
    text = (
        f"Warmed {counts['warmed']}, already cached {counts['cached']}, failed {counts['failed']} "
        f"of {len(outcomes)} question(s) in {seconds:.1f} s."
    )
    return counts, text
