"""REST API: thin views that validate, call one service, and serialise the result."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied, Throttled, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from rag import jobs, visibility
from rag.access import DocumentAccess, has_key_or_session, throttle_ticket
from rag.answers import answer_question, stream_answer
from rag.collections import CollectionNotFound
from rag.errors import ServiceUnavailable
from rag.feedback import UnknownQuery, give_feedback
from rag.ingestion import delete_document, ingest_document
from rag.models import ApiKey, Document, collection_name_validator
from rag.parsers import SafeJSONParser
from rag.readers import ReadError, clean_line, media_type_for
from rag.serializers import (
    DocumentDetailSerializer,
    DocumentInSerializer,
    DocumentSerializer,
    FeedbackInSerializer,
    FeedbackOutSerializer,
    IngestResultSerializer,
    JobCreatedSerializer,
    JobSerializer,
    QueryInSerializer,
    QueryOutSerializer,
    error_responses,
    query_out,
)
from rag.sources import FileStatus
from rag.throttling import Refused

logger = logging.getLogger(__name__)


class NDJSONRenderer(BaseRenderer):
    """Lets clients ask for ``application/x-ndjson``: a non-streamed body (an error) is one JSON line."""

    media_type = "application/x-ndjson"
    format = "ndjson"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return b"" if data is None else json.dumps(data, ensure_ascii=False).encode() + b"\n"


class QueryApi(APIView):
    renderer_classes = [JSONRenderer, NDJSONRenderer]

    def check_throttles(self, request: Request) -> None:
        # Counted by the question's first statement (rag.first_look), not by one of its own.
        self.throttle = throttle_ticket(request, self)

    @extend_schema(
        request=QueryInSerializer,
        responses={200: QueryOutSerializer, **error_responses(400, 401, 404, 406, 413, 415, 429, 503)},
        description='With "stream": true the answer comes as application/x-ndjson: a "meta" line (sources, '
        'cache and degraded flags), "token" lines, then a "done" line with timings, or an "error" line.',
    )
    def post(self, request: Request) -> Response | StreamingHttpResponse:
        try:
            serializer = QueryInSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
        except APIException:
            self.spend_throttle()  # a refused question spends the budget too, as any request does
            raise
        data = serializer.validated_data
        arguments = {
            "question": data["question"],
            "caller": visibility.Caller.for_request(request),
            "collections": data["collections"],
            "k": data["k"],
            "use_cache": data["use_cache"],
            # Anonymous answers are cached only once a question repeats (rag.answers).
            "trusted": has_key_or_session(request),
            "throttle": self.throttle,
        }
        try:
            if data["stream"]:
                return ndjson_response(stream_answer(**arguments))
            answer = answer_question(**arguments)
        except CollectionNotFound as exc:
            raise collection_not_found(exc) from None
        except Refused as exc:
            raise Throttled(wait=exc.wait) from None
        return Response(query_out(answer))

    def spend_throttle(self) -> None:
        if self.throttle is not None:
            try:
                self.throttle.spend()
            except Refused as exc:
                raise Throttled(wait=exc.wait) from None


class FeedbackApi(APIView):
    """A thumbs up or down on an answer (its query_id). A signed-in user's or key holder's down
    removes the answer from the cache; an anonymous one is only recorded."""

    @extend_schema(
        request=FeedbackInSerializer,
        responses={201: FeedbackOutSerializer, **error_responses(400, 401, 404, 413, 415, 429, 503)},
    )
    def post(self, request: Request) -> Response:
        serializer = FeedbackInSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            feedback = give_feedback(
                caller=visibility.Caller.for_request(request),
                query_id=data["query_id"],
                rating=data["rating"],
                comment=data["comment"],
                user=request.user,
                api_key=request.auth if isinstance(request.auth, ApiKey) else None,
            )
        except UnknownQuery:
            raise NotFound(f"No answer with query_id {data['query_id']}.") from None
        return Response(FeedbackOutSerializer(feedback).data, status=status.HTTP_201_CREATED)


def collection_not_found(exc: CollectionNotFound) -> NotFound:
    """The one answer for a collection that does not exist and for one the caller may not read."""
    name = str(exc)
    if name == visibility.EVERY:
        return NotFound("There is no collection you may read.")
    return NotFound(f"No collection named {name!r}.")


def ndjson_response(events: Iterator[dict]) -> StreamingHttpResponse:
    """One JSON object per line, flushed as produced; a failure mid-stream ends with an error line."""

    def lines() -> Iterator[str]:
        try:
            for event in events:
                yield json.dumps(event, ensure_ascii=False) + "\n"
        except Exception:  # the status line is long gone: the error has to travel in the stream
            logger.exception("streamed answer failed")
            error = {"code": "internal_error", "message": "The answer could not be completed."}
            yield json.dumps({"type": "error", "error": error}) + "\n"

    response = StreamingHttpResponse(lines(), content_type="application/x-ndjson")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass tokens on as they come
    return response


class DocumentListApi(generics.ListAPIView):
    serializer_class = DocumentSerializer
    parser_classes = [SafeJSONParser, MultiPartParser, FormParser]
    permission_classes = [DocumentAccess]

    def get_queryset(self):
        caller = visibility.Caller.for_request(self.request)
        name = self.request.query_params.get("collection")
        if name:
            try:
                if name != visibility.EVERY:
                    collection_name_validator(name)
            except DjangoValidationError as exc:
                raise ValidationError({"collection": exc.messages}) from None
            try:
                collections = visibility.resolve(caller, [name])
            except CollectionNotFound:
                raise NotFound(f"No collection named {name!r}.") from None
            documents = Document.objects.filter(collection_id__in=collections.ids)
        else:
            documents = visibility.documents(caller)
        return documents.select_related("collection").order_by("id")

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "collection",
                str,
                description="Only this collection's documents (else those of every collection you may read).",
            )
        ],
        responses={200: DocumentSerializer(many=True), **error_responses(400, 401, 404, 429, 503)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=DocumentInSerializer,
        responses={
            200: IngestResultSerializer,
            201: IngestResultSerializer,
            202: JobCreatedSerializer,
            **error_responses(400, 401, 403, 413, 415, 429, 503),
        },
        description='A file upload, JSON text with "async": true, and JSON text longer than '
        "RAGSITE_INLINE_MAX_CHARS (20000 characters) are queued as a job: 202 with the job, to follow at "
        "GET /api/jobs/{id}. Shorter JSON text is ingested at once: 201 (new) or 200 (updated, unchanged).",
    )
    def post(self, request: Request) -> Response:
        serializer = DocumentInSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        writable_or_refuse(request, data["collection"])
        upload = data.get("file")
        if upload is not None:
            try:
                media_type = media_type_for(upload.name)
            except ReadError as exc:
                raise ValidationError({"file": [f"{str(exc).capitalize()}."]}) from None
            payload = upload.read()
            source = data.get("source") or clean_line(f"upload:{upload.name}")
        else:
            payload = data["text"].encode("utf-8")
            media_type = "text/plain"
            source = data.get("source") or clean_line(f"api:{data['title'].strip()}")
        if upload is not None or data["async"] or len(data["text"]) > settings.RAGSITE_INLINE_MAX_CHARS:
            return queued(
                collection_name=data["collection"],
                source=source,
                data=payload,
                media_type=media_type,
                title=(data.get("title") or "").strip(),
                field="file" if upload is not None else "text",
            )
        result = ingest_document(
            collection_name=data["collection"],
            source=source,
            data=payload,
            media_type=media_type,
            title=(data.get("title") or "").strip(),
        )
        if result.status == FileStatus.FAILED:
            if result.reason.startswith("embedding"):
                raise ServiceUnavailable(f"Could not ingest: {result.reason}")
            raise ValidationError({"file" if upload is not None else "text": [result.reason]})
        document = Document.objects.annotate(chunk_count=Count("chunks")).get(pk=result.document_id)
        body = {"status": result.status, "chunks": result.chunks, "document": document}
        code = status.HTTP_201_CREATED if result.status == FileStatus.NEW else status.HTTP_200_OK
        return Response(IngestResultSerializer(body).data, status=code)


def queued(*, field: str, **document: str | bytes) -> Response:
    """Queue the document as a job: 202 with the job, and where to follow it."""
    try:
        job = jobs.queue_document(**document)  # type: ignore[arg-type]
    except ReadError as exc:
        raise ValidationError({field: [str(exc)]}) from None
    response = Response(JobCreatedSerializer({"job": job}).data, status=status.HTTP_202_ACCEPTED)
    response["Location"] = job.url
    return response


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class JobDetailApi(APIView):
    """A background job: its status and progress; DELETE cancels it while no worker has started it."""

    permission_classes = [DocumentAccess]

    @extend_schema(responses={200: JobSerializer, **error_responses(401, 404, 429, 503)})
    def get(self, request: Request, pk: int) -> Response:
        job = get_object_or_404(visibility.jobs(visibility.Caller.for_request(request)), pk=pk)
        return Response(JobSerializer(job).data)

    @extend_schema(responses={200: JobSerializer, **error_responses(401, 403, 404, 409, 429, 503)})
    def delete(self, request: Request, pk: int) -> Response:
        job = get_object_or_404(visibility.jobs(visibility.Caller.for_request(request)), pk=pk)
        writable_or_refuse(request, job.collection)
        try:
            job = jobs.cancel_job(job=job)
        except jobs.JobConflict as exc:
            raise Conflict(str(exc)) from None
        return Response(JobSerializer(job).data)


def writable_or_refuse(request: Request, collection_name: str) -> None:
    """403 when the caller may read the collection but not write to it; 404 when it may not read it."""
    try:
        visibility.collection_for_write(visibility.Caller.for_request(request), collection_name)
    except CollectionNotFound as exc:
        raise collection_not_found(exc) from None
    except visibility.WriteRefused as exc:
        raise PermissionDenied(str(exc)) from None


class DocumentDetailApi(APIView):
    permission_classes = [DocumentAccess]

    @extend_schema(responses={200: DocumentDetailSerializer, **error_responses(401, 404, 429, 503)})
    def get(self, request: Request, pk: int) -> Response:
        documents = visibility.documents(visibility.Caller.for_request(request))
        document = get_object_or_404(
            documents.select_related("collection").annotate(chunk_count=Count("chunks")), pk=pk
        )
        return Response(DocumentDetailSerializer(document).data)

    @extend_schema(responses={204: None, **error_responses(401, 403, 404, 429, 503)})
    def delete(self, request: Request, pk: int) -> Response:
        documents = visibility.documents(visibility.Caller.for_request(request))
        document = get_object_or_404(documents.select_related("collection"), pk=pk)
        writable_or_refuse(request, document.collection.name)
        if not delete_document(document=document):
            raise NotFound("No Document matches the given query.")  # deleted by another request meanwhile
        return Response(status=status.HTTP_204_NO_CONTENT)
