from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from django.db.models import Count, Max, Min

from rag.answers import answer_question
from rag.management.progress import Progress
from rag.models import CacheOutcome, Collection, QueryLog
from rag.text import question_hash
from resilience import config

# (collection, question) -> (outcome, reason); outcome is warmed | cached | failed
Outcome = tuple[str, str]


class Command(BaseCommand):
    help = (
        "Answer questions ahead of time so that users get cache hits: the questions of a file (one a "
        "line) or the most asked ones from the query log. Questions already cached are left alone, so "
        "it is safe to re-run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--file", type=Path, help="A text file, one question a line ('#' starts a comment).")
        source.add_argument("--top", type=int, metavar="N", help="The N most asked questions in the query log.")
        parser.add_argument(
            "--collection",
            default=None,
            help="Collection to warm (default: 'default' for --file; every collection for --top).",
        )
        parser.add_argument("--concurrency", type=int, default=1, help="Questions answered at once (default 1).")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar, even on a terminal.")

    def handle(
        self, *args, file: Path | None, top: int | None, collection: str | None, concurrency: int, **options
    ) -> str:
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1.")
        if not config.current().cache.enabled:
            raise CommandError("The semantic cache is disabled (RAGSITE_CACHE_ENABLED): nothing to warm.")
        jobs = self._from_file(file, collection or "default") if file is not None else self._from_log(top, collection)
        jobs = _unique(jobs)
        missing = sorted({name for name, _ in jobs} - set(Collection.objects.values_list("name", flat=True)))
        if missing:
            raise CommandError(f"No collection named {', '.join(map(repr, missing))}.")

        with Progress(self, options, total=len(jobs), unit="question", desc="warm") as progress:

            def report(job: tuple[str, str], outcome: Outcome) -> None:
                if outcome[0] == "failed":
                    progress.failed(f"FAILED [{job[0]}] {job[1]}: {outcome[1]}")
                progress.advance()

            started = time.perf_counter()
            outcomes = _run(jobs, concurrency, report)
        counts = {kind: sum(1 for o, _ in outcomes if o == kind) for kind in ("warmed", "cached", "failed")}
        summary = (
            f"Warmed {counts['warmed']}, already cached {counts['cached']}, failed {counts['failed']} "
            f"of {len(jobs)} question(s) in {time.perf_counter() - started:.1f} s."
        )
        if counts["failed"]:
            raise CommandError(f"{counts['failed']} question(s) could not be cached. {summary}")
        return summary

    def _from_file(self, path: Path, collection: str) -> list[tuple[str, str]]:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise CommandError(f"{path} is not UTF-8 text.") from None
        questions = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not questions:
            raise CommandError(f"{path} holds no questions.")
        return [(collection, question) for question in questions]

    def _from_log(self, top: int, collection: str | None) -> list[tuple[str, str]]:
        if top < 1:
            raise CommandError("--top must be at least 1.")
        log = QueryLog.objects.all()
        if collection:
            log = log.filter(collection=collection)
        # Spellings of one question share a hash; the first spelling stands for them.
        rows = (
            log.values("collection", "question_hash")
            .annotate(asked=Count("id"), question=Min("question"), last=Max("created_at"))
            .order_by("-asked", "-last")[:top]
        )
        return [(row["collection"], row["question"]) for row in rows]


def _unique(jobs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for name, question in jobs:
        key = (name, question_hash(question))
        if key not in seen:
            seen.add(key)
            out.append((name, question))
    return out


def _warm(job: tuple[str, str]) -> Outcome:
    name, question = job
    try:
        answer = answer_question(question=question, collection_name=name, log_query=False)
    except Exception as exc:  # one bad question must not stop the others
        return "failed", f"{type(exc).__name__}: {exc}"
    if answer.cache in (CacheOutcome.EXACT, CacheOutcome.SEMANTIC) and not answer.stale:
        return "cached", ""
    if answer.degraded:
        return "failed", answer.degraded_reason or "degraded answer (not cached)"
    return "warmed", ""


def _warm_in_thread(job: tuple[str, str]) -> Outcome:
    try:
        return _warm(job)
    finally:
        connections.close_all()  # this worker thread's connections, not the caller's


def _run(
    jobs: list[tuple[str, str]], concurrency: int, report: Callable[[tuple[str, str], Outcome], None]
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    if concurrency == 1:
        for job in jobs:
            outcomes.append(_warm(job))
            report(job, outcomes[-1])
        return outcomes
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="warm") as executor:
        for job, outcome in zip(jobs, executor.map(_warm_in_thread, jobs), strict=True):
            outcomes.append(outcome)
            report(job, outcome)
    return outcomes
