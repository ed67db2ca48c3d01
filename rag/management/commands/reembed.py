from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rag.embeddings import Embedder, LocalEmbedder, OllamaEmbedder, get_embedder
from rag.management.progress import Progress
from rag.models import Collection
from rag.reembedding import ReembedReport, chunks_to_reembed, reembed_collections
from resilience import config
from resilience.config import LOCAL_EMBEDDING_MODEL, ProviderConfig
from resilience.errors import OllamaError


def build_embedder(backend: str | None, model: str | None, batch_size: int) -> Embedder:
    """The configured embedder, or the one ``--backend``/``--model`` name (to convert before switching)."""
    if backend is None and model is None:
        return get_embedder()
    provider = config.current().provider
    target = ProviderConfig(embedding_backend=backend or provider.embedding_backend, embedding_model=model or "")
    if target.embedding_backend == "ollama":
        return OllamaEmbedder(target.resolved_embedding_model, batch_size=batch_size)
    if target.resolved_embedding_model != LOCAL_EMBEDDING_MODEL:
        raise CommandError(f"The local backend only has {LOCAL_EMBEDDING_MODEL}.")
    return LocalEmbedder(LOCAL_EMBEDDING_MODEL, batch_size=batch_size)


class Command(BaseCommand):
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
        if batch_size is None:
            batch_size = config.current().provider.embedding_batch_size
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        if all_collections:
            collections = list(Collection.objects.all())
        else:
            collections = list(Collection.objects.filter(name__in=collection))
            missing = sorted(set(collection) - {c.name for c in collections})
            if missing:
                raise CommandError(f"No such collection: {', '.join(missing)}.")
        embedder = build_embedder(backend, model, batch_size)
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
