"""Who asks what: the query log, evaluation runs, feedback, API keys and throttle counts."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models

from rag.models.corpus import CacheOutcome, Collection


class QueryLog(models.Model):
    """One row per answered question: what was asked, how the cache served it, how long it took.

    ``warm_cache --top`` warms the most asked questions from it. Staff who are not superusers see
    only the rows of collections they may read (rag.visibility).
    """

    question = models.TextField()
    question_hash = models.CharField(max_length=64, help_text="SHA-256 of the normalised question.")
    # Names, not foreign keys: the log outlives a deleted collection. The names as one string
    # ("eng,hr"), and the ids the question was asked of, which decide who may see the row.
    collection = models.TextField()
    collection_ids = ArrayField(models.BigIntegerField(), default=list)
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
            models.Index(fields=["question_hash", "collection_ids"], name="querylog_question_collections"),
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
    # The key's scope (rag.visibility reads it): what it may read, and whether it may write there.
    all_collections = models.BooleanField(
        default=False,
        help_text="Read (and, with 'may write', write) every collection, restricted ones and those created later.",
    )
    collections = models.ManyToManyField(
        Collection,
        blank=True,
        related_name="api_keys",
        help_text="The collections it reads besides the public ones, and the only ones it may write to.",
    )
    can_write = models.BooleanField(
        "may write",
        default=False,
        help_text="Add and delete documents in the collections of its scope (with 'all collections': "
        "anywhere, creating collections too).",
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
    def issue(
        cls,
        *,
        name: str,
        created_by=None,
        collections: list[Collection] | None = None,
        all_collections: bool = False,
        can_write: bool = False,
    ) -> tuple[ApiKey, str]:
        """Create a key; returns the row and the key, which is never retrievable again.

        Without a scope a key reads the public collections and writes nowhere.
        """
        import secrets

        key = cls.PREFIX + secrets.token_urlsafe(32)
        row = cls.objects.create(
            name=name,
            prefix=key[:12],
            key_hash=cls.hash(key),
            created_by=created_by,
            all_collections=all_collections,
            can_write=can_write,
        )
        if collections:
            row.collections.set(collections)
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
