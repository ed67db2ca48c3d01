"""Feedback from the people asking: a thumbs up or down on an answer, and what follows from it.

A thumbs down from someone the service knows (a signed-in user or an API key holder) removes the
answer from the cache, so the next asker gets a fresh one. An anonymous thumbs down is recorded
but evicts nothing on its own: otherwise anyone could empty the cache. Feedback is taken only on
answers from collections the caller may read (rag.visibility): another team's query ids are
answered as unknown.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser

from rag import query_log, visibility
from rag.golden import GoldenQuestion
from rag.models import CachedAnswer, Feedback, QueryLog
from rag.text import question_hash


class UnknownQuery(Exception):
    """No logged answer has this query id."""


def evict_answer(log: QueryLog) -> int:
    """Delete the cached answers a logged question was (or would be) served from; how many."""
    questions = [log.question, *([log.matched_question] if log.matched_question else [])]
    hashes = {question_hash(q) for q in questions}
    entries = CachedAnswer.objects.filter(collection_ids=log.collection_ids, question_hash__in=hashes)
    _, by_model = entries.delete()
    return by_model.get(CachedAnswer._meta.label, 0)


def give_feedback(
    *,
    caller: visibility.Caller,
    query_id: int,
    rating: str,
    comment: str = "",
    user: Any = None,
    api_key: Any = None,
) -> Feedback:
    """Record a rating of a logged answer; a trusted thumbs down also evicts it from the cache."""
    log = query_log.find(query_id, visibility.tagged(caller, QueryLog.objects.all()))
    if log is None:
        raise UnknownQuery(query_id)
    # A key holder's request.user is the key's identity, not an account: only accounts are users.
    signed_in = user if isinstance(user, AbstractBaseUser) and user.is_authenticated else None
    feedback = Feedback(query=log, rating=rating, comment=comment.strip(), user=signed_in, api_key=api_key)
    if rating == Feedback.Rating.DOWN and (signed_in is not None or api_key is not None):
        feedback.evicted = evict_answer(log)
    feedback.save()
    return feedback


def golden_line(feedback: Feedback) -> GoldenQuestion | None:
    """A thumbs-down question as a golden-set line, once an operator said what should answer it."""
    if feedback.not_answerable:
        return GoldenQuestion(question=feedback.query.question, kind="feedback", answerable=False)
    if feedback.expected_source.strip():
        return GoldenQuestion(
            question=feedback.query.question, expected=(feedback.expected_source.strip(),), kind="feedback"
        )
    return None


def export_feedback(path: Path, *, collection: str | None = None) -> tuple[int, int]:
    """Write the thumbs-down questions an operator has judged as golden-set lines (JSONL).

    Returns (lines written, thumbs-down questions not yet judged, so left out). A question given
    several thumbs down is written once.
    """
    downs = Feedback.objects.filter(rating=Feedback.Rating.DOWN).select_related("query").order_by("created_at")
    if collection:
        downs = downs.filter(query__collection=collection)
    lines: dict[str, str] = {}
    unjudged: set[str] = set()
    for feedback in downs:
        key = question_hash(feedback.query.question)
        line = golden_line(feedback)
        if line is None:
            unjudged.add(key)
        else:
            lines[key] = line.as_line()
    unjudged -= set(lines)
    write_whole("".join(f"{line}\n" for line in lines.values()), path)
    return len(lines), len(unjudged)


def write_whole(text: str, path: Path) -> None:
    """Write ``text`` beside ``path``, then move it over ``path`` in one step: a failure part way
    leaves the old file as it was. A file replaced keeps its permissions; a new one gets those a
    plain new file would."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
