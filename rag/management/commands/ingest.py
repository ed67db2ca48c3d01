from __future__ import annotations

from django.contrib.auth.models import Group
from django.core.management.base import CommandError, CommandParser

from rag import jobs
from rag.collections import restrict_collection
from rag.ingestion import IngestReport, ingest_items
from rag.management.base import RagCommand
from rag.management.progress import Progress
from rag.models import Collection, JobStatus, collection_name_validator
from rag.sources import FileResult, FileStatus, SourceItem, demo_items, file_items, path_problem, printable


class Command(RagCommand):
    help = (
        "Ingest .txt, .md, .html and .pdf files (directories recursively) into a collection. "
        "Unchanged files are skipped, changed ones replaced; bad files are reported and skipped."
    )

    raw_options = ("paths",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="*", help="Files or directories to ingest.")
        parser.add_argument("--collection", default="default", help="Collection name (default: default).")
        parser.add_argument(
            "--demo", action="store_true", help="Ingest the Python Language Reference topics shipped with Python."
        )
        parser.add_argument(
            "--if-empty", action="store_true", help="Do nothing when the collection already holds documents."
        )
        parser.add_argument(
            "--restricted-to",
            action="append",
            metavar="GROUP",
            default=[],
            help="Make the collection readable only by this group's members (repeat for several), before "
            "any document is written; without it a new collection is public.",
        )
        parser.add_argument("--no-progress", action="store_true", help="No progress bar, even on a terminal.")
        parser.add_argument(
            "--background",
            action="store_true",
            help="Queue one job per file for the workers and return at once (follow them in the admin or at "
            "GET /api/jobs/ID).",
        )

    def handle(
        self,
        *args,
        paths: list[str],
        collection: str,
        demo: bool,
        if_empty: bool,
        restricted_to: list[str],
        **options,
    ) -> str:
        if not paths and not demo:
            raise CommandError("Give at least one PATH, or --demo.")
        if any(not path.strip() for path in paths):
            raise CommandError("An empty PATH names no file or folder (give . for the current folder).")
        try:
            collection_name_validator(collection)
        except Exception as exc:
            raise CommandError(f"Invalid collection name {collection!r}: {exc.messages[0]}") from None
        groups = list(Group.objects.filter(name__in=restricted_to))
        unknown = sorted(set(restricted_to) - {group.name for group in groups})
        if unknown:
            raise CommandError(f"No group named {', '.join(map(repr, unknown))}: create it in the admin first.")
        if groups:
            # The paths named are checked before the collection changes: a typo leaves it as it
            # was (public stays public). Files inside them fail one by one, as without it.
            problems = [(path, path_problem(path)) for path in paths]
            for path, problem in problems:
                if problem:
                    self.stderr.write(f"FAILED {printable(path)}: {problem}")
            if any(problem for _, problem in problems):
                raise CommandError(
                    f"{sum(1 for _, p in problems if p)} path(s) cannot be read: nothing was ingested and "
                    f"collection {collection!r} was left as it was."
                )
            restrict_collection(name=collection, groups=groups)
        if if_empty and Collection.objects.filter(name=collection, documents__isnull=False).exists():
            restricted = f" (restricted to {', '.join(g.name for g in groups)})" if groups else ""
            return f"Collection {collection!r}{restricted} already has documents; nothing to do."

        items = list(file_items(paths)) if paths else []
        if demo:
            items.extend(demo_items())
        if options.get("background"):
            return self.queue(items, collection)
        with Progress(self, options, total=len(items), unit="file", desc="ingest") as progress:

            def on_result(result: FileResult) -> None:
                if result.status == FileStatus.FAILED:
                    progress.failed(f"FAILED {result.source}: {result.reason}")
                progress.advance()

            report = ingest_items(items, collection_name=collection, progress=on_result) if items else IngestReport()
        summary = f"Collection {collection!r}: {report.summary()}"
        if report.aborted:
            raise CommandError(f"Stopped: {report.aborted}. Files done so far are kept; run again to resume. {summary}")
        if report.failures:
            raise CommandError(f"{len(report.failures)} file(s) failed. {summary}")
        return summary

    def queue(self, items: list[SourceItem | FileResult], collection: str) -> str:
        queued = jobs.queue_items(items, collection_name=collection)
        failed = [job for job in queued if job.status == JobStatus.FAILED]
        for job in failed:
            self.stderr.write(f"FAILED {job.source}: {job.reason}")
        ids = [job.pk for job in queued if job.status == JobStatus.QUEUED]
        span = f" (jobs {ids[0]}-{ids[-1]})" if len(ids) > 1 else f" (job {ids[0]})" if ids else ""
        summary = f"Collection {collection!r}: queued {len(ids)} file(s){span}; a worker ingests them."
        if failed:
            raise CommandError(f"{len(failed)} file(s) could not be queued. {summary}")
        return summary
