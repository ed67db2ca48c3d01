"""Collections of documents, their chunks and the chunks' embeddings."""

from __future__ import annotations

from datetime import datetime, timedelta

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


class CacheOutcome(models.TextChoices):
    """How the answer cache served a question."""

    EXACT = "exact", "exact hit"
    SEMANTIC = "semantic", "semantic hit"
    MISS = "miss", "miss"
    BYPASS = "bypass", "bypass (the cache was not consulted)"


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


class QueryLog(models.Model):
    """One row per answered question: what was asked, how the cache served it, how long it took.

    ``warm_cache --top`` warms the most asked questions from it.
    """

    question = models.TextField()
    question_hash = models.CharField(max_length=64, help_text="SHA-256 of the normalised question.")
    # The name, not a foreign key: the log outlives a deleted collection.
    collection = models.CharField(max_length=64)
    cache = models.CharField(max_length=16, choices=CacheOutcome.choices)
    latency_ms = models.FloatField()
    degraded = models.BooleanField(default=False)
    # On a semantic hit, the cached question whose answer was served (a thumbs down evicts it too).
    matched_question = models.TextField(blank=True, default="")
    answerable = models.BooleanField(default=True, help_text="False: the answer said the documents do not cover it.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["created_at"], name="querylog_created"),
            models.Index(fields=["collection", "question_hash"], name="querylog_collection_question"),
        ]

    def __str__(self) -> str:
        return f"{self.collection}: {self.question[:60]}"


class EvalRun(models.Model):
    """One run of ``manage.py evaluate``: a golden set's figures, and each question's outcome."""

    created_at = models.DateTimeField(auto_now_add=True)
    golden_set = models.CharField(max_length=200, help_text="The golden set's name (a shipped set or a file's stem).")
    collection = models.CharField(max_length=64)
    k = models.PositiveSmallIntegerField(help_text="Sources asked per question.")
    label = models.CharField(max_length=200, blank=True, help_text="What changed, in the operator's words.")
    summary = models.JSONField(help_text="hit@1, hit@5, MRR, nDCG@10, declining, latency.")
    results = models.JSONField(help_text="Per question: rank of the first expected source, declined, time.")
    settings = models.JSONField(default=dict, help_text="Embedding model, answer writer, prompt version.")

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "evaluation run"
        indexes = [models.Index(fields=["golden_set", "collection", "created_at"], name="evalrun_set_created")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.golden_set} on {self.collection}"

    def figure(self, name: str) -> float | None:
        return self.summary.get(name)

    def previous(self) -> EvalRun | None:
        """The run of the same set and collection just before this one."""
        return (
            EvalRun.objects.filter(
                golden_set=self.golden_set, collection=self.collection, created_at__lt=self.created_at
            )
            .order_by("-created_at")
            .first()
        )


class Feedback(models.Model):
    """A thumbs up or down on one answer, from the person who asked."""

    class Rating(models.TextChoices):
        UP = "up", "\U0001f44d up"
        DOWN = "down", "\U0001f44e down"

    query = models.ForeignKey(QueryLog, on_delete=models.CASCADE, related_name="feedback")
    rating = models.CharField(max_length=4, choices=Rating.choices)
    comment = models.TextField(blank=True, max_length=2000)
    # Who: a signed-in user, a key holder, or anonymous (both empty).
    user = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    api_key = models.ForeignKey("ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    evicted = models.PositiveIntegerField(default=0, help_text="Cached answers this feedback removed.")
    expected_source = models.CharField(
        max_length=1024,
        blank=True,
        help_text="The document (source or title) that answers the question: set by an operator, then exported "
        "as a golden-set line by manage.py evaluate --export-feedback.",
    )
    not_answerable = models.BooleanField(
        default=False, help_text="The documents cannot answer it: exported as an unanswerable question."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "feedback"
        indexes = [models.Index(fields=["rating", "created_at"], name="feedback_rating_created")]

    def __str__(self) -> str:
        return f"{self.rating} on #{self.query_id}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.expected_source.strip() and self.not_answerable:
            raise ValidationError("Either name the expected source or mark it not answerable, not both.")


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


class ThrottleCount(models.Model):
    """A caller's requests in the current and the previous throttle window (rag.throttling).

    The table is unlogged (migration 0007): a crash forgets the counts, nothing more.
    """

    key = models.CharField(max_length=200, primary_key=True)
    window_index = models.BigIntegerField()
    count = models.PositiveIntegerField(default=0)
    previous = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.key}: {self.count}"


# THE ANSWER AND EMBEDDING CACHES
# Their tables keep the names they were created with (they began in the resilience app).


class CachedAnswer(models.Model):
    """One answer to a question, valid only within its scope.

    The scope is every input that changes the answer: the collection and its corpus version,
    the embedding model (questions are only compared with vectors of the same model), the
    generation backend and model, the prompt version, and k (how many sources it cites).
    """

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="+")
    corpus_version = models.PositiveBigIntegerField()
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
            HnswIndex(
                OpClass(
                    Cast("embedding", output_field=VectorField(dimensions=DEFAULT_DIMENSIONS)),
                    name="vector_cosine_ops",
                ),
                name="cachedanswer_minilm_hnsw",
                condition=Q(embedding_model=DEFAULT_MODEL),
                m=ANSWER_HNSW_M,
                ef_construction=ANSWER_HNSW_EF_CONSTRUCTION,
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


# JOBS
# What users and operators see of a background job. The queue itself is procrastinate's (its own
# tables in the same database); a Job row outlives its queue entry and carries the progress.


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobKind(models.TextChoices):
    INGEST = "ingest", "ingest a document"
    REEMBED = "reembed", "re-embed collections"
    WARM_CACHE = "warm_cache", "warm the answer cache"


class Job(models.Model):
    kind = models.CharField(max_length=16, choices=JobKind.choices)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    # The collection's name, not a foreign key: the collection is created when the document is written.
    collection = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=1024, blank=True, help_text="The document's source, for ingestion.")
    file_root = models.CharField(
        max_length=1024, blank=True, help_text="The folder a file was read from (never shown), as on its document."
    )
    title = models.CharField(max_length=512, blank=True, help_text="A title given with the upload, if any.")
    media_type = models.CharField(max_length=100, blank=True)
    params = models.JSONField(default=dict, blank=True, help_text="What a re-embed or warm-up job works on.")
    done = models.PositiveIntegerField(default=0, help_text="Chunks (or questions) done.")
    total = models.PositiveIntegerField(
        null=True, blank=True, help_text="Chunks (or questions) in all; unknown at first."
    )
    result = models.CharField(max_length=16, blank=True, help_text="new, updated or unchanged, for ingestion.")
    document = models.ForeignKey(Document, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.TextField(blank=True, help_text="Why it failed, or why it is waiting to be retried.")
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the worker that last ran it.")
    queue_job_id = models.BigIntegerField(null=True, blank=True, db_index=True, help_text="procrastinate's job id.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "finished_at"], name="job_status_finished")]

    def __str__(self) -> str:
        what = self.source or ", ".join(self.params.get("collections", [])) or self.get_kind_display()
        return f"#{self.pk} {self.kind} {what}"

    @property
    def finished(self) -> bool:
        return self.status in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)

    @property
    def url(self) -> str:
        return f"/api/jobs/{self.pk}"


class JobUpload(models.Model):
    """The bytes of a document to ingest, so that a worker on any machine can read them.

    Deleted when its job is done; kept for a retry while a failed or cancelled job is kept.
    """

    job = models.OneToOneField(Job, on_delete=models.CASCADE, primary_key=True, related_name="upload")
    data = models.BinaryField()

    def __str__(self) -> str:
        return f"upload of job {self.job_id} ({len(self.data)} bytes)"
