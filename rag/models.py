"""Collections of documents, their chunks and the chunks' embeddings."""

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

collection_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
    "Use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
)


class Collection(models.Model):
    name = models.CharField(max_length=64, unique=True, validators=[collection_name_validator])
    description = models.TextField(blank=True)
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
    source = models.CharField(max_length=1024, help_text="File path or URI the text came from.")
    title = models.CharField(max_length=512)
    sha256 = models.CharField(max_length=64)
    media_type = models.CharField(max_length=100)
    size_bytes = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["collection", "source"], name="document_unique_source"),
        ]

    def __str__(self) -> str:
        return self.title


class Chunk(models.Model):
    # Denormalised so retrieval filters on one table, inside the vector and full-text indexes' scans.
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="+")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()
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
            HnswIndex(
                OpClass(
                    Cast("embedding", output_field=VectorField(dimensions=DEFAULT_DIMENSIONS)),
                    name="vector_cosine_ops",
                ),
                name="chunk_embedding_minilm_hnsw",
                condition=Q(embedding_model=DEFAULT_MODEL),
                m=16,
                ef_construction=64,
            ),
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.ordinal}"


class QueryLog(models.Model):
    """One row per answered question: what was asked, how the cache served it, how long it took.

    ``warm_cache --top`` warms the most asked questions from it.
    """

    question = models.TextField()
    question_hash = models.CharField(max_length=64, help_text="SHA-256 of the normalised question.")
    # The name, not a foreign key: the log outlives a deleted collection.
    collection = models.CharField(max_length=64)
    cache = models.CharField(max_length=16, help_text="exact, semantic, miss or bypass.")
    latency_ms = models.FloatField()
    degraded = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["created_at"], name="querylog_created"),
            models.Index(fields=["collection", "question_hash"], name="querylog_collection_question"),
        ]

    def __str__(self) -> str:
        return f"{self.collection}: {self.question[:60]}"
