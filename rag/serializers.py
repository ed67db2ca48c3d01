from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from rag.models import CacheOutcome, Collection, Document, JobStatus, collection_name_validator
from rag.readers import clean_line
from rag.text import invisible
from rag.visibility import EVERY

# Collections one question may be asked of at once.
MAX_COLLECTIONS = 50


class CollectionNamesField(serializers.ListField):
    """Collection names, or ["*"]: every collection the caller may read."""

    child = serializers.CharField(max_length=64)

    def to_internal_value(self, data: object) -> list[str]:
        if isinstance(data, list) and self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)  # before duplicates are dropped, and cheaply
        names = super().to_internal_value(data)
        if EVERY in names:
            if len(names) > 1:
                raise serializers.ValidationError(f'"{EVERY}" stands for every collection you may read: send it alone.')
            return names
        for name in names:
            collection_name_validator(name)
        return sorted(set(names))


class QueryInSerializer(serializers.Serializer):
    question = serializers.CharField(required=False, allow_blank=True, trim_whitespace=True)
    query = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=True, help_text="Alias of question."
    )
    collection = serializers.CharField(default="default", max_length=64, validators=[collection_name_validator])
    collections = CollectionNamesField(
        required=False,
        min_length=1,
        max_length=MAX_COLLECTIONS,
        help_text=f'Ask several collections at once (instead of "collection"), or ["{EVERY}"]: every collection '
        "you may read. Each source names its collection.",
    )
    k = serializers.IntegerField(default=5, min_value=1, max_value=settings.RAGSITE_MAX_K)
    use_cache = serializers.BooleanField(
        default=True,
        help_text='false: neither read nor store the answer cache; the answer reports "cache": "bypass".',
    )
    stream = serializers.BooleanField(
        default=False, help_text="Answer as application/x-ndjson events: meta, tokens, then done (or error)."
    )

    def validate(self, attrs: dict) -> dict:
        question = attrs.get("question") or attrs.get("query") or ""
        if invisible(question):  # nothing to ask (direction marks, zero-width spaces): as if empty
            raise serializers.ValidationError({"question": ["This field is required."]})
        limit = settings.RAGSITE_MAX_QUESTION_CHARS
        if len(question) > limit:
            raise serializers.ValidationError(
                {"question": [f"Ensure this field has no more than {limit} characters (it has {len(question)})."]}
            )
        attrs["question"] = question
        attrs.pop("query", None)
        if "collections" in attrs and "collection" in self.initial_data:
            raise serializers.ValidationError({"collections": ['Send "collection" or "collections", not both.']})
        attrs["collections"] = attrs.get("collections") or [attrs["collection"]]
        return attrs


class AlsoInSerializer(serializers.Serializer):
    document_id = serializers.IntegerField()
    title = serializers.CharField()
    source = serializers.CharField()
    collection = serializers.CharField()


class SourceSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="chunk_id")
    document_id = serializers.IntegerField()
    title = serializers.CharField()
    source = serializers.CharField()
    score = serializers.FloatField()
    text = serializers.CharField()
    chunk_ids = serializers.ListField(
        child=serializers.IntegerField(), help_text="The chunks of this source: neighbouring chunks are merged."
    )
    heading = serializers.CharField(help_text="Where in its document the source is: title > section > subsection.")
    collection = serializers.CharField(help_text="The collection the passage is from.")
    also_in = AlsoInSerializer(
        many=True,
        help_text="Other documents holding this passage word for word (a chapter quoting its section): "
        "shown once, here, instead of as sources of their own.",
    )
    highlight = serializers.ListField(
        child=serializers.IntegerField(),
        allow_null=True,
        help_text="[start, end) offsets in text of the sentence closest to the question; null when the "
        "sentences were not scored (a full-text-only answer).",
    )


class QueryOutSerializer(serializers.Serializer):
    question = serializers.CharField()
    answer = serializers.CharField()
    collection = serializers.CharField(help_text='The collection asked, or the names of several joined: "eng,hr".')
    collections = serializers.ListField(child=serializers.CharField(), help_text="The collections asked, sorted.")
    sources = SourceSerializer(many=True)
    cache = serializers.ChoiceField(
        choices=CacheOutcome.values,
        help_text="How the answer cache served this: bypass means it was not consulted (use_cache false, "
        "or the cache is disabled).",
    )
    stale = serializers.BooleanField(
        help_text="A cached answer past its TTL, served (with degraded true) because generation is unavailable."
    )
    matched_question = serializers.CharField(
        allow_null=True, help_text="On a semantic hit, the cached question whose answer this is."
    )
    similarity = serializers.FloatField(
        allow_null=True, help_text="On a semantic hit, the cosine similarity of the two questions."
    )
    degraded = serializers.BooleanField()
    degraded_reason = serializers.CharField(allow_null=True)
    generator = serializers.CharField()
    timings_ms = serializers.DictField(child=serializers.FloatField())
    answerable = serializers.BooleanField(
        help_text="false: the documents do not cover the question; the sources are the closest passages, not an "
        "answer, and the answer text says so."
    )
    query_id = serializers.IntegerField(allow_null=True, help_text="Names this answer in POST /api/feedback.")
    invalid_citations = serializers.ListField(
        child=serializers.IntegerField(),
        help_text="Passage numbers a generated answer cites that do not exist (a sign it strayed from the sources).",
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def query_out(answer: Any) -> dict[str, Any]:
    """``QueryOutSerializer(answer).data``, the same dictionary, built without DRF's fields.

    Every answer takes this path and a cached answer is otherwise cheaper than DRF's copying of a
    serializer's fields (0.7 ms here): the serializer stays the schema, and a test holds the two
    equal on every kind of answer.
    """
    number = lambda value: None if value is None else float(value)  # noqa: E731
    return {
        "question": _text(answer.question),
        "answer": _text(answer.answer),
        "collection": _text(answer.collection),
        "collections": [_text(name) for name in answer.collections],
        "sources": [
            {
                "id": int(chunk.chunk_id),
                "document_id": int(chunk.document_id),
                "title": _text(chunk.title),
                "source": _text(chunk.source),
                "score": number(chunk.score),
                "text": _text(chunk.text),
                "chunk_ids": [int(i) for i in chunk.chunk_ids],
                "heading": _text(chunk.heading),
                "collection": _text(chunk.collection),
                "also_in": [
                    {
                        "document_id": int(other["document_id"]),
                        "title": _text(other["title"]),
                        "source": _text(other["source"]),
                        "collection": _text(other.get("collection", "")),
                    }
                    for other in chunk.also_in
                ],
                "highlight": [int(i) for i in chunk.highlight] if chunk.highlight else None,
            }
            for chunk in answer.sources
        ],
        "cache": _text(answer.cache),
        "stale": bool(answer.stale),
        "matched_question": _text(answer.matched_question),
        "similarity": number(answer.similarity),
        "degraded": bool(answer.degraded),
        "degraded_reason": _text(answer.degraded_reason),
        "generator": _text(answer.generator),
        "timings_ms": {str(step): number(ms) for step, ms in answer.timings_ms.items()},
        "answerable": bool(answer.answerable),
        "query_id": None if answer.query_id is None else int(answer.query_id),
        "invalid_citations": [int(n) for n in answer.invalid_citations],
    }


class FeedbackInSerializer(serializers.Serializer):
    query_id = serializers.IntegerField(min_value=1)
    rating = serializers.ChoiceField(choices=["up", "down"])
    comment = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


class FeedbackOutSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    query_id = serializers.IntegerField()
    rating = serializers.CharField()
    evicted = serializers.IntegerField(help_text="Cached answers removed (only a signed-in user's or key's down).")


class DocumentSerializer(serializers.ModelSerializer):
    collection = serializers.SlugRelatedField(slug_field="name", queryset=Collection.objects.all())

    class Meta:
        model = Document
        fields = [
            "id",
            "collection",
            "title",
            "source",
            "media_type",
            "sha256",
            "size_bytes",
            "created_at",
            "updated_at",
        ]


class DocumentDetailSerializer(DocumentSerializer):
    chunk_count = serializers.IntegerField(read_only=True)

    class Meta(DocumentSerializer.Meta):
        fields = [*DocumentSerializer.Meta.fields, "chunk_count"]


class DocumentInSerializer(serializers.Serializer):
    """A document as JSON text, or as an uploaded file (multipart)."""

    collection = serializers.CharField(default="default", max_length=64, validators=[collection_name_validator])
    title = serializers.CharField(required=False, allow_blank=True, max_length=512)
    text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    source = serializers.CharField(
        required=False, max_length=1000, help_text="Identifies the document; re-posting it replaces it."
    )
    file = serializers.FileField(required=False)

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        # "async" is a Python keyword, so it cannot be declared as an attribute.
        fields["async"] = serializers.BooleanField(
            default=False,
            help_text=(
                "true: queue the text as a job and answer 202 at once. Files are always queued; JSON text "
                "longer than RAGSITE_INLINE_MAX_CHARS (20000 characters) is queued too."
            ),
        )
        return fields

    def validate_source(self, value: str) -> str:
        if clean_line(value) != value:
            raise serializers.ValidationError("A source may not hold control or direction-override characters.")
        return value

    def validate(self, attrs: dict) -> dict:
        if attrs.get("file") is None and not (attrs.get("text") or "").strip():
            raise serializers.ValidationError({"text": ["Send non-empty text, or a file."]})
        if attrs.get("file") is None and not (attrs.get("title") or "").strip():
            raise serializers.ValidationError({"title": ["A title is required with text."]})
        upload = attrs.get("file")
        if upload is not None and upload.size > settings.RAGSITE_MAX_UPLOAD_BYTES:
            raise serializers.ValidationError(
                {"file": [f"File too large: {upload.size} bytes (limit {settings.RAGSITE_MAX_UPLOAD_BYTES})."]}
            )
        return attrs


class IngestResultSerializer(serializers.Serializer):
    status = serializers.CharField()
    chunks = serializers.IntegerField()
    document = DocumentDetailSerializer()


class JobProgressSerializer(serializers.Serializer):
    done = serializers.IntegerField(help_text="Chunks embedded so far (questions, for a cache warm-up).")
    total = serializers.IntegerField(allow_null=True, help_text="Chunks in all; null until the file is read.")


class JobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.CharField(help_text="Where to follow it: GET for its status, DELETE to cancel it.")
    kind = serializers.CharField(help_text="ingest, reembed or warm_cache.")
    status = serializers.ChoiceField(choices=JobStatus.values)
    collection = serializers.CharField()
    source = serializers.CharField()
    progress = JobProgressSerializer(source="*")
    document_id = serializers.IntegerField(allow_null=True, help_text="The document, once done.")
    result = serializers.CharField(help_text="new, updated or unchanged, once an ingestion is done.")
    reason = serializers.CharField(
        help_text="Why it failed; while queued again, why the last attempt did not finish and when the next is."
    )
    attempts = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class JobCreatedSerializer(serializers.Serializer):
    job = JobSerializer()


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField(help_text="Per-field messages, for validation errors.")


class ErrorSerializer(serializers.Serializer):
    """The one shape of every API error."""

    error = ErrorDetailSerializer()


def error_responses(*statuses: int) -> dict[int, type[serializers.Serializer]]:
    """OpenAPI responses for the error statuses an endpoint can answer with."""
    return dict.fromkeys(statuses, ErrorSerializer)
