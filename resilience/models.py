"""Rows the resilience layer keeps in Postgres, so every worker and instance shares them."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.postgres.indexes import OpClass
from django.db import models
from django.db.models import Q
from django.db.models.functions import Cast, Coalesce
from pgvector.django import HnswIndex, VectorField

from rag.models import DEFAULT_DIMENSIONS, DEFAULT_MODEL

# SEMANTIC CACHE


class CachedAnswer(models.Model):
    """One answer to a question, valid only within its scope.

    The scope is every input that changes the answer: the collection and its corpus version,
    the embedding model (questions are only compared with vectors of the same model), the
    generation backend and model, the prompt version, and k (how many sources it cites).
    """

    collection = models.ForeignKey("rag.Collection", on_delete=models.CASCADE, related_name="+")
    corpus_version = models.PositiveBigIntegerField()
    embedding_model = models.CharField(max_length=200)
    generation = models.CharField(max_length=200, help_text="'extractive' or 'ollama/<model>'.")
    prompt_version = models.CharField(max_length=32)
    k = models.PositiveSmallIntegerField()
    question_hash = models.CharField(max_length=64, help_text="SHA-256 of the normalised question.")
    question = models.TextField()
    # Untyped like rag's chunks: each embedding model gets its own partial HNSW index over
    # ``embedding::vector(N)`` (resilience.cache.ensure_answer_index).
    embedding = VectorField()
    answer = models.TextField()
    sources = models.JSONField(default=list, help_text="The sources as the API returns them.")
    generator = models.CharField(max_length=200)
    created_at = models.DateTimeField()
    hits = models.PositiveIntegerField(default=0)
    last_hit_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # One entry per question and scope; also the index of exact lookups and of scope
            # scans (its leading columns are the scope).
            models.UniqueConstraint(
                fields=[
                    "collection",
                    "corpus_version",
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
            models.Index(Coalesce("last_hit_at", "created_at"), name="cachedanswer_last_used"),
            HnswIndex(
                OpClass(
                    Cast("embedding", output_field=VectorField(dimensions=DEFAULT_DIMENSIONS)),
                    name="vector_cosine_ops",
                ),
                name="cachedanswer_minilm_hnsw",
                condition=Q(embedding_model=DEFAULT_MODEL),
                m=16,
                ef_construction=64,
            ),
        ]

    def __str__(self) -> str:
        return self.question[:80]

    def age_seconds(self, now: datetime) -> float:
        return (now - self.created_at).total_seconds()

    def is_fresh(self, now: datetime, ttl_seconds: int) -> bool:
        """Servable as a normal hit: younger than the TTL (hits never extend it)."""
        return now < self.created_at + timedelta(seconds=ttl_seconds)


class CachedEmbedding(models.Model):
    """A text's vector under one embedding model, so no text is embedded twice."""

    model = models.CharField(max_length=200)
    text_hash = models.CharField(max_length=64, help_text="SHA-256 of the whitespace-normalised text.")
    embedding = VectorField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "text_hash"], name="cachedembedding_unique_text"),
        ]

    def __str__(self) -> str:
        return f"{self.model}:{self.text_hash[:12]}"


class CacheCounter(models.Model):
    """A named event count (hits, misses, evictions...), shared by every worker process."""

    name = models.CharField(max_length=64, primary_key=True)
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}={self.value}"
