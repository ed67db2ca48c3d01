from __future__ import annotations

from django.core.management.base import CommandError, CommandParser

from rag import jobs
from rag.embeddings import embedder_for
from rag.management.base import RagCommand
from rag.management.progress import Progress
from rag.models import Chunk, Collection
from rag.reembedding import ReembedReport, chunks_to_reembed, reembed_collections
from resilience import config
from resilience.errors import OllamaError

# The provider settings' own limit on embedding_batch_size: one maximum for both.
MAX_BATCH_SIZE = int(config.ProviderConfig.maxima["embedding_batch_size"])


class Command(RagCommand):
    help = (
        "Re-embed the chunks of collections that another model embedded, with the configured embedding "
        "model (or --backend/--model). Batches are committed one by one: interrupt it any time and run "
        "it again to resume."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--collection", action="append", default=[], help="Collection name (repeat for several).")
        parser.add_argument("--all", dest="all_collections", action="store_true", help="Every collection.")
        parser.add_argument(
            "--backend", choices=["local", "ollama"], help="Embed with this backend instead of the configured one."
        )
        parser.add_argument("--model", help="Embed with this model instead of the configured one.")
        parser.add_argument("--batch-size", type=int, help="Chunks per batch (default: the embedding batch size).")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar, even on a terminal.")
        parser.add_argument(
            "--background", action="store_true", help="Queue it as a job for a worker and return at once."
        )

    def handle(
        self,
        *args,
        collection: list[str],
        all_collections: bool,
        backend: str | None,
        model: str | None,
        batch_size: int | None,
        **options,
    ) -> str:
        if bool(collection) == all_collections:
            raise CommandError("Give --collection NAME (one or more), or --all.")
        if batch_size is not None and not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise CommandError(f"--batch-size must be between 1 and {MAX_BATCH_SIZE}.")
        if batch_size is None:
            batch_size = config.current().provider.embedding_batch_size
        if all_collections:
            collections = list(Collection.objects.all())
        else:
            collections = list(Collection.objects.filter(name__in=collection))
            missing = sorted(set(collection) - {c.name for c in collections})
            if missing:
                raise CommandError(f"No such collection: {', '.join(missing)}.")
        try:
            embedder = embedder_for(backend, model, batch_size)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if len(embedder.name) > Chunk._meta.get_field("embedding_model").max_length:
            raise CommandError(f"Model name too long: {embedder.name[:40]}...")
        if options.get("background"):
            job = jobs.queue_reembed(
                collections=[c.name for c in collections], backend=backend, model=model, batch_size=batch_size
            )
            return f"Queued job {job.pk}: re-embed {len(collections)} collection(s) with {embedder.name}."
        todo = chunks_to_reembed(collections=collections, model_name=embedder.name).count()

        report = ReembedReport(model=embedder.name)
        with Progress(self, options, total=todo, unit="chunk", desc="reembed") as progress:
            try:
                reembed_collections(
                    collections=collections,
                    embedder=embedder,
                    batch_size=batch_size,
                    progress=progress.advance,
                    report=report,
                )
            except OllamaError as exc:
                raise CommandError(
                    f"Stopped: embeddings unavailable: {exc.reason}. The {report.converted} chunks done are kept; "
                    "run the command again to resume."
                ) from exc
            except KeyboardInterrupt:
                raise CommandError(
                    f"Interrupted. The {report.converted} chunks done are kept; run the command again to resume."
                ) from None
        return f"Re-embed: {report.summary()}."
