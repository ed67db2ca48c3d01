"""The answer and embedding caches' rows."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from pgvector.django import VectorField

from rag.models.corpus import (
    ANSWER_HNSW_EF_CONSTRUCTION,
    ANSWER_HNSW_M,
    default_model_hnsw,
)

# THE ANSWER AND EMBEDDING CACHES
# Their tables keep the names they were created with (they began in the resilience app).


class CachedAnswer(models.Model):
    """One answer to a question, valid only within its scope.

    The scope is every input that changes the answer: the exact set of collections it was built
    from and their corpus versions, the embedding model (questions are only compared with vectors
    of the same model), the generation backend and model, the prompt version, and k (how many
    sources it cites). It is served only to callers who may read every one of its collections.
    """

    # Sorted by id, the versions aligned with them: an answer of ["hr"] is not one of ["eng", "hr"].
    collection_ids = ArrayField(models.BigIntegerField())
    corpus_versions = ArrayField(models.BigIntegerField())
    embedding_model = models.CharField(max_length=200)
    generation = models.CharField(max_length=200, help_text="'extractive' or 'ollama/<model>'.")
    prompt_version = models.CharField(max_length=32)
    k = models.PositiveSmallIntegerField()
    question_hash = models.CharField(max_length=64, help_text="SHA-256 of the normalised question.")
    question = models.TextField()
    # Untyped like rag's chunks: each embedding model gets its own partial HNSW index over
    # ``embedding::vector(N)`` (rag.answer_cache.ensure_answer_index).
    embedding = VectorField()
    answer = models.TextField()
    sources = models.JSONField(default=list, help_text="The sources as the API returns them.")
    generator = models.CharField(max_length=200)
    created_at = models.DateTimeField()

    class Meta:
        db_table = "resilience_cachedanswer"
        constraints = [
            # One entry per question and scope; also the index of exact lookups and of scope
            # scans (its leading columns are the scope).
            models.UniqueConstraint(
                fields=[
                    "collection_ids",
                    "corpus_versions",
                    "embedding_model",
                    "generation",
                    "prompt_version",
                    "k",
                    "question_hash",
                ],
                name="cachedanswer_unique_question",
            ),
        ]
        indexes = [
            models.Index(fields=["created_at"], name="cachedanswer_created"),
            # Entries holding a collection whose corpus moved on (rag.answer_cache's clean-up).
            GinIndex(fields=["collection_ids"], name="cachedanswer_collections_gin"),
            default_model_hnsw(
                "cachedanswer_minilm_hnsw", m=ANSWER_HNSW_M, ef_construction=ANSWER_HNSW_EF_CONSTRUCTION
            ),
        ]

    def __str__(self) -> str:
        return self.question[:80]

    def is_fresh(self, now: datetime, ttl_seconds: int) -> bool:
        """Servable as a normal hit: younger than the TTL (hits never extend it)."""
        return now < self.created_at + timedelta(seconds=ttl_seconds)

    @property
    def hits(self) -> int:
        """Times served from the cache (kept in CachedAnswerUsage; select_related("usage") for lists)."""
        try:
            return self.usage.hits
        except CachedAnswerUsage.DoesNotExist:
            return 0

    @property
    def last_hit_at(self) -> datetime | None:
        try:
            return self.usage.last_hit_at
        except CachedAnswerUsage.DoesNotExist:
            return None


class CachedAnswerUsage(models.Model):
    """How often and how lately an entry was served: the LRU order.

    Kept apart from the entry so that a hit writes one small row. An update of the entry itself is
    a HOT update only while its page has room, and otherwise inserts it into the HNSW index again
    (measured at 100k entries: 4 ms a hit, against 0.5 ms for the index scan itself).
    """

    # No database constraint: the cache deletes entries and their usage in one statement, and a
    # hit racing an eviction must not fail the lookup (the whole-table clean-up drops orphans).
    entry = models.OneToOneField(
        CachedAnswer, on_delete=models.CASCADE, primary_key=True, related_name="usage", db_constraint=False
    )
    hits = models.PositiveIntegerField(default=0)
    last_hit_at = models.DateTimeField()

    class Meta:
        db_table = "resilience_cachedanswerusage"

    def __str__(self) -> str:
        return f"{self.entry_id}: {self.hits} hits"


class CachedEmbedding(models.Model):
    """A text's vector under one embedding model, so no text is embedded twice."""

    model = models.CharField(max_length=200)
    text_hash = models.CharField(max_length=64, help_text="SHA-256 of the whitespace-normalised text.")
    embedding = VectorField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "resilience_cachedembedding"
        constraints = [
            models.UniqueConstraint(fields=["model", "text_hash"], name="cachedembedding_unique_text"),
        ]

    def __str__(self) -> str:
        return f"{self.model}:{self.text_hash[:12]}"


class CacheCounter(models.Model):
    """A named event count (hits, misses, evictions...), shared by every worker process."""

    name = models.CharField(max_length=64, primary_key=True)
    value = models.BigIntegerField(default=0)

    class Meta:
        db_table = "resilience_cachecounter"

    def __str__(self) -> str:
        return f"{self.name}={self.value}"
