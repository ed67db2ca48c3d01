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


class ApiKey(models.Model):
    """A bearer key for the API. Only its SHA-256 is stored: the key itself is shown once.

    Keys are 256-bit random tokens, so an unsalted hash is as safe as a password hash here and
    can be looked up directly.
    """

    PREFIX = "rsk_"

    name = models.CharField(max_length=100, help_text="Who or what uses this key.")
    prefix = models.CharField(max_length=12, editable=False, help_text="The key's first characters, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @staticmethod
    def hash(key: str) -> str:
        import hashlib

        return hashlib.sha256(key.encode()).hexdigest()

    @classmethod
    def issue(cls, *, name: str, created_by=None) -> tuple[ApiKey, str]:
        """Create a key; returns the row and the key, which is never retrievable again."""
        import secrets

        key = cls.PREFIX + secrets.token_urlsafe(32)
        row = cls.objects.create(name=name, prefix=key[:12], key_hash=cls.hash(key), created_by=created_by)
        return row, key

    @classmethod
    def authenticate(cls, key: str) -> ApiKey | None:
        if not key.startswith(cls.PREFIX) or len(key) > 200:
            return None
        row = cls.objects.filter(key_hash=cls.hash(key), revoked_at__isnull=True).first()
        if row is not None:
            from django.utils import timezone

            now = timezone.now()
            # Written at most once a minute per key: no write per request.
            if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
                cls.objects.filter(pk=row.pk).update(last_used_at=now)
        return row

    def revoke(self) -> None:
        from django.utils import timezone

        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])
