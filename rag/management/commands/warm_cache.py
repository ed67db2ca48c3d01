from __future__ import annotations

import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count, Max, Min

from rag import jobs, warming
from rag.management.progress import Progress
from rag.models import Collection, QueryLog
from resilience import config


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
        parser.add_argument(
            "--background", action="store_true", help="Queue it as a job for a worker and return at once."
        )

    def handle(
        self, *args, file: Path | None, top: int | None, collection: str | None, concurrency: int, **options
    ) -> str:
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1.")
        if not config.current().cache.enabled:
            raise CommandError("The semantic cache is disabled (RAGSITE_CACHE_ENABLED): nothing to warm.")
        questions = (
            self._from_file(file, collection or "default") if file is not None else self._from_log(top, collection)
        )
        questions = warming.unique(questions)
        missing = sorted({name for name, _ in questions} - set(Collection.objects.values_list("name", flat=True)))
        if missing:
            raise CommandError(f"No collection named {', '.join(map(repr, missing))}.")
        if options.get("background"):
            job = jobs.queue_warm_cache(questions=questions, concurrency=concurrency)
            return f"Queued job {job.pk}: warm {len(questions)} question(s)."

        with Progress(self, options, total=len(questions), unit="question", desc="warm") as progress:

            def report(question: warming.Question, outcome: warming.Outcome) -> None:
                if outcome[0] == "failed":
                    progress.failed(f"FAILED [{question[0]}] {question[1]}: {outcome[1]}")
                progress.advance()

            started = time.perf_counter()
            outcomes = warming.warm_questions(questions, concurrency=concurrency, report=report)
        counts, summary = warming.summary(outcomes, time.perf_counter() - started)
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
