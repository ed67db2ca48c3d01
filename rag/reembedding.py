"""Re-embedding: give every chunk of some collections a vector of the configured embedding model.

Chunks record the model that embedded them and a query only compares vectors of one model, so a
collection half re-embedded still answers: vector search sees the converted chunks, full-text
search sees all of them. Each batch is committed on its own; a chunk already carrying the target
model's name is skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Count, QuerySet

from rag.embeddings import Embedder, ensure_vector_index, has_vector_index
from rag.ingestion import embedding_input
from rag.models import Chunk, Collection, Sentence


@dataclass
class ReembedReport:
    model: str
    collections: list[str] = field(default_factory=list)
    converted: int = 0
    already: int = 0  # chunks that carried the target model before this run
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.converted / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.converted} chunks re-embedded with {self.model} in {len(self.collections)} collection(s), "
            f"{self.already} already were; {self.seconds:.1f} s ({rate:.1f} chunks/s)"
        )


def chunks_to_reembed(*, model_name: str, collections: Sequence[Collection] | None = None) -> QuerySet[Chunk]:
    """The chunks (of these collections, or all) that another model than ``model_name`` embedded."""
    chunks = Chunk.objects.exclude(embedding_model=model_name)
    return chunks if collections is None else chunks.filter(collection__in=collections)


def stale_chunk_summary(model_name: str) -> list[tuple[str, str, int]]:
    """(collection, embedding model, chunks) of every chunk another model than ``model_name`` embedded."""
    rows = (
        chunks_to_reembed(model_name=model_name)
        .values_list("collection__name", "embedding_model")
        .annotate(n=Count("id"))
        .order_by("collection__name", "embedding_model")
    )
    return [(name, model, n) for name, model, n in rows]


def reembed_collections(
    *,
    collections: Sequence[Collection],
    embedder: Embedder,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
    report: ReembedReport | None = None,
) -> ReembedReport:
    """Re-embed, ``batch_size`` chunks at a time, what another model embedded in these collections.

    Embedding errors propagate (the caller reports them); what was committed before stays. Pass
    ``report`` to keep the counts of the batches done when an error interrupts the run.
    """
    started = time.perf_counter()
    report = report or ReembedReport(model=embedder.name)
    report.collections = [c.name for c in collections]
    report.already = Chunk.objects.filter(collection__in=collections, embedding_model=embedder.name).count()
    touched: set[int] = set()
    last_id = 0
    # A model without a vector index yet gets it once its vectors are written: building it is
    # several times faster than inserting every converted row into a live index, and until then
    # vector search over the converted chunks is an exact scan (slower, never wrong).
    dimensions, build_after = 0, False
    try:
        while True:
            batch = list(
                chunks_to_reembed(collections=collections, model_name=embedder.name)
                .filter(id__gt=last_id)
                .select_related("document")
                .only("id", "text", "heading", "collection_id", "document__title")
                .order_by("id")[:batch_size]
            )
            if not batch:
                break
            # The chunks and their sentences in one call: a batch is one request to the model.
            sentences = list(Sentence.objects.filter(chunk__in=batch).only("id", "text"))
            texts = [embedding_input(c.heading or c.document.title, c.text) for c in batch]
            vectors = embedder.embed(texts + [s.text for s in sentences])
            if not dimensions:
                dimensions = int(vectors.shape[1])
                build_after = not has_vector_index(embedder.name, dimensions)
            if not build_after:
                ensure_vector_index(embedder.name, dimensions)
            for item, vector in zip([*batch, *sentences], vectors, strict=True):
                item.embedding = vector
                item.embedding_model = embedder.name
            with transaction.atomic():
                Chunk.objects.bulk_update(batch, ["embedding", "embedding_model"])
                Sentence.objects.bulk_update(sentences, ["embedding", "embedding_model"])
            touched.update(c.collection_id for c in batch)
            report.converted += len(batch)
            last_id = batch[-1].id
            if progress:
                progress(len(batch))
    finally:
        if build_after and report.converted:
            ensure_vector_index(embedder.name, dimensions)
        # Answers cached while the collection was half converted must not outlive the conversion.
        for collection in collections:
            if collection.pk in touched:
                collection.bump_version()
        report.seconds = time.perf_counter() - started
    return report
