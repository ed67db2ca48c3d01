from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.db.models import Count, Max, Min

from rag import jobs, warming
from rag.management.base import RagCommand
from rag.management.progress import Progress
from rag.models import Collection, QueryLog
from resilience import config

# Bounds on what is asked: more questions than a cache would keep, more threads than connections.
MAX_TOP = 100_000
MAX_CONCURRENCY = 32


class Command(RagCommand):
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
            action="append",
            default=None,
            help="Collection to warm; repeat it to warm questions asked of several at once (default: "
            "'default' for --file; for --top, the questions asked of every collection, or of these).",
        )
        parser.add_argument("--concurrency", type=int, default=1, help="Questions answered at once (default 1).")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar, even on a terminal.")
        parser.add_argument(
            "--background", action="store_true", help="Queue it as a job for a worker and return at once."
        )

    def handle(
        self, *args, file: Path | None, top: int | None, collection: list[str] | None, concurrency: int, **options
    ) -> str:
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise CommandError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}.")
        if top is not None and not 1 <= top <= MAX_TOP:
            raise CommandError(f"--top must be between 1 and {MAX_TOP}.")
        if not config.current().cache.enabled:
            raise CommandError("The semantic cache is disabled (RAGSITE_CACHE_ENABLED): nothing to warm.")
        names = tuple(sorted(set(collection or [])))
        self._check_collections(names)
        questions = self._from_file(file, names or ("default",)) if file is not None else self._from_log(top, names)
        questions = warming.unique(questions)
        self._check_collections({name for collections, _ in questions for name in collections})
        if options.get("background"):
            job = jobs.queue_warm_cache(questions=questions, concurrency=concurrency)
            return f"Queued job {job.pk}: warm {len(questions)} question(s)."

        with Progress(self, options, total=len(questions), unit="question", desc="warm") as progress:

            def report(question: warming.Question, outcome: warming.Outcome) -> None:
                if outcome[0] == "failed":
                    progress.failed(f"FAILED [{','.join(question[0])}] {question[1]}: {outcome[1]}")
                progress.advance()

            started = time.perf_counter()
            outcomes = warming.warm_questions(questions, concurrency=concurrency, report=report)
        counts, summary = warming.summary(outcomes, time.perf_counter() - started)
        if counts["failed"]:
            raise CommandError(f"{counts['failed']} question(s) could not be cached. {summary}")
        return summary

    @staticmethod
    def _check_collections(names: Iterable[str]) -> None:
        missing = sorted(set(names) - set(Collection.objects.values_list("name", flat=True)))
        if missing:
            raise CommandError(f"No collection named {', '.join(map(repr, missing))}.")

    def _from_file(self, path: Path, collections: tuple[str, ...]) -> list[warming.Question]:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise CommandError(f"{path} is not UTF-8 text.") from None
        limit = settings.RAGSITE_MAX_QUESTION_CHARS
        questions = []
        for number, line in enumerate(lines, start=1):
            question = line.strip()
            if not question or question.startswith("#"):
                continue
            # Refused here as the API would refuse them, not stored in a job that cannot run.
            if "\x00" in question:
                raise CommandError(f"{path} line {number}: holds a NUL character.")
            if len(question) > limit:
                raise CommandError(f"{path} line {number}: longer than {limit} characters.")
            questions.append(question)
        if not questions:
            raise CommandError(f"{path} holds no questions.")
        return [(collections, question) for question in questions]

    def _from_log(self, top: int, collections: tuple[str, ...]) -> list[warming.Question]:
        """The most asked questions, each with the very collections it was asked of (those that
        still exist): a cached answer is keyed by that exact set."""
        names = dict(Collection.objects.values_list("pk", "name"))
        log = QueryLog.objects.exclude(collection_ids=[])
        if collections:
            log = log.filter(collection_ids__overlap=[pk for pk, name in names.items() if name in collections])
        # Spellings of one question share a hash; the first spelling stands for them.
        rows = (
            log.values("collection_ids", "question_hash")
            .annotate(asked=Count("id"), question=Min("question"), last=Max("created_at"))
            .order_by("-asked", "-last")[:top]
        )
        return [
            (tuple(sorted(names[pk] for pk in row["collection_ids"])), row["question"])
            for row in rows
            if all(pk in names for pk in row["collection_ids"])
        ]
