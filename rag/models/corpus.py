"""Collections of documents, their chunks (and sentences) and the chunks' embeddings."""

from __future__ import annotations

from django.contrib.postgres.indexes import GinIndex, OpClass
from django.contrib.postgres.search import SearchVectorField
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Cast
from pgvector.django import HnswIndex, VectorField

# The default local model. Each embedding model gets its own partial HNSW index over the
# embeddings cast to its dimension (pgvector indexes need a fixed dimension); this one ships in
# the migrations, others are created on first use by rag.embeddings.ensure_vector_index().
DEFAULT_MODEL = "local/all-MiniLM-L6-v2"
DEFAULT_DIMENSIONS = 384

# HNSW build parameters of the cached questions' indexes. With pgvector's defaults (16, 64) a
# question repeating one cached entry among many close paraphrases was missed by the index 13 %
# of the time at 100k entries (ef_search 100); with (24, 128), 1.5 %, at the same query latency
# (bench/cache.py). Only inserting, on the miss path that pays a model call anyway, gets slower.
ANSWER_HNSW_M = 24
ANSWER_HNSW_EF_CONSTRUCTION = 128
# HNSW build parameters of the chunks' indexes. Synthetic copies of the demo corpus (bench
# retrieval) at 100k chunks: with (16, 64) recall@10 reached 0.955 only at ef_search 1000; with
# (32, 128), 0.964 at 400 and 0.984 at 1000. The build takes about twice as long.
CHUNK_HNSW_M = 32
CHUNK_HNSW_EF_CONSTRUCTION = 128


def default_model_hnsw(name: str, *, m: int, ef_construction: int) -> HnswIndex:
    """The shipped partial HNSW index over the default model's vectors (cosine)."""
    return HnswIndex(
        OpClass(Cast("embedding", output_field=VectorField(dimensions=DEFAULT_DIMENSIONS)), name="vector_cosine_ops"),
        name=name,
        condition=Q(embedding_model=DEFAULT_MODEL),
        m=m,
        ef_construction=ef_construction,
    )


class CacheOutcome(models.TextChoices):
    """How the answer cache served a question."""

    EXACT = "exact", "exact hit"
    SEMANTIC = "semantic", "semantic hit"
    MISS = "miss", "miss"
    BYPASS = "bypass", "bypass (the cache was not consulted)"


collection_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z",
    "Use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
)


class Visibility(models.TextChoices):
    PUBLIC = "public", "public: anyone allowed to query the service"
    RESTRICTED = "restricted", "restricted: members of its groups (and superusers)"


class Collection(models.Model):
    """Who may read it is decided in one place, rag.visibility; here are only its facts."""

    name = models.CharField(max_length=64, unique=True, validators=[collection_name_validator])
    description = models.TextField(blank=True)
    visibility = models.CharField(
        max_length=16,
        choices=Visibility.choices,
        default=Visibility.PUBLIC,
        help_text="Public: every caller allowed to query the service reads it. Restricted: only members of "
        "the groups below, superusers, and API keys whose scope names it.",
    )
    groups = models.ManyToManyField(
        "auth.Group",
        blank=True,
        related_name="collections",
        help_text="The groups whose members read it when it is restricted.",
    )
    # Bumped whenever a document is added, changed or deleted, so cached answers of an older
    # corpus are never served.
    corpus_version = models.PositiveBigIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def bump_version(self) -> None:
        Collection.objects.filter(pk=self.pk).update(corpus_version=F("corpus_version") + 1)
        self.refresh_from_db(fields=["corpus_version"])


class Document(models.Model):
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="documents")
    source = models.CharField(
        max_length=1024,
        help_text="Where the text came from: a file's path relative to its folder, or a label given through the API.",
    )
    file_root = models.CharField(
        max_length=1024,
        blank=True,
        default="",
        help_text="The folder a file was read from (never shown to callers); empty for documents that are not files.",
    )
    title = models.CharField(max_length=512)
    sha256 = models.CharField(max_length=64)
    media_type = models.CharField(max_length=100)
    size_bytes = models.PositiveBigIntegerField(default=0)
    # The ingestion pipeline (readers, chunking, what is embedded) that wrote the chunks: an
    # unchanged file is ingested again when the pipeline has changed since.
    pipeline = models.CharField(max_length=32, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["collection", "file_root", "source"], name="document_unique_file_source"),
        ]

    def __str__(self) -> str:
        return self.title


class Chunk(models.Model):
    # Denormalised so retrieval filters on one table, inside the vector and full-text indexes' scans.
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="+")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()
    heading = models.TextField(blank=True, default="", help_text="Title > section > subsection above the chunk.")
    text = models.TextField()
    embedding = VectorField()
    embedding_model = models.CharField(max_length=200)
    search_vector = SearchVectorField(null=True)

    class Meta:
        ordering = ["document_id", "ordinal"]
        constraints = [
            models.UniqueConstraint(fields=["document", "ordinal"], name="chunk_unique_ordinal"),
        ]
        indexes = [
            GinIndex(fields=["search_vector"], name="chunk_search_vector_gin"),
            models.Index(fields=["collection", "embedding_model"], name="chunk_collection_model"),
            default_model_hnsw(
                "chunk_embedding_minilm_hnsw", m=CHUNK_HNSW_M, ef_construction=CHUNK_HNSW_EF_CONSTRUCTION
            ),
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.ordinal}"


class Sentence(models.Model):
    """A sentence of a chunk's prose with its own vector: the reranker and the extractive answer
    compare the question with sentences, which a chunk's one vector blurs together."""

    chunk = models.ForeignKey(Chunk, on_delete=models.CASCADE, related_name="sentences")
    position = models.PositiveSmallIntegerField()
    text = models.TextField()
    embedding = VectorField()
    embedding_model = models.CharField(max_length=200)

    class Meta:
        ordering = ["chunk_id", "position"]
        indexes = [models.Index(fields=["chunk", "embedding_model"], name="sentence_chunk_model")]

    def __str__(self) -> str:
        return self.text[:80]
