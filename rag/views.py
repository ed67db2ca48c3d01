"""The search page: a plain server-rendered form that works without JavaScript."""

from __future__ import annotations

import json
import logging
import math
from urllib.parse import quote, urlencode

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST
from rest_framework import exceptions

from rag import visibility
from rag.access import ApiKeyAuthentication, enforce
from rag.answers import answer_question
from rag.apis import QueryApi
from rag.collections import CollectionNotFound
from rag.feedback import UnknownQuery, give_feedback
from rag.models import QueryLog, collection_name_validator
from rag.serializers import MAX_COLLECTIONS
from rag.text import invisible

logger = logging.getLogger(__name__)


class CollectionNamesField(forms.Field):
    """The ticked collections: ``?collection=eng&collection=hr``."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value: object) -> list[str]:
        return [name for name in (value or []) if name]  # type: ignore[union-attr]

    def validate(self, value: list[str]) -> None:
        if len(value) > MAX_COLLECTIONS:
            raise ValidationError(f"Pick at most {MAX_COLLECTIONS} collections.")
        for name in value:
            collection_name_validator(name)


class SearchForm(forms.Form):
    q = forms.CharField(label="Question", max_length=settings.RAGSITE_MAX_QUESTION_CHARS, strip=True)
    collection = CollectionNamesField(required=False)
    k = forms.IntegerField(required=False, min_value=1, max_value=settings.RAGSITE_MAX_K)

    def clean_q(self) -> str:
        question = self.cleaned_data["q"]
        if invisible(question):  # nothing to ask: as if the box were empty
            raise ValidationError(self.fields["q"].error_messages["required"], code="required")
        return question


# The search page's thank-you after a vote (a redirect back to the question, see ``feedback``).
FEEDBACK_OUTCOMES = {"thanks": {"evicted": False}, "evicted": {"evicted": True}}


def _access_refused(request: HttpRequest, *, asking: bool) -> tuple[int, str, dict[str, str]] | None:
    """Why the page may not answer this visitor now, as (status, message, headers); None if it may.

    The same access rules and the same throttle budget as POST /api/query. Only a question spends
    the budget, not the empty page.
    """
    try:
        enforce(request, QueryApi, throttle=asking)
    except (exceptions.NotAuthenticated, exceptions.AuthenticationFailed, exceptions.PermissionDenied) as exc:
        headers = {"WWW-Authenticate": ApiKeyAuthentication().authenticate_header(request)}
        if request.user.is_authenticated:  # signed in, but not staff
            message = "Questions here are answered for staff only, and your account is not a staff account."
        else:
            message = "Questions here are answered for signed-in staff only: please sign in."
        return exc.status_code, message, headers if exc.status_code == 401 else {}
    except exceptions.Throttled as exc:
        wait = max(1, math.ceil(exc.wait or 1))
        message = f"Too many questions from your address: please try again in {wait} seconds."
        return 429, message, {"Retry-After": str(wait)}
    return None


def search(request: HttpRequest) -> HttpResponse:
    # Other parameters alone (a link picking a collection, a campaign's utm_*) open the empty page.
    asked = "q" in request.GET
    form = SearchForm(request.GET if asked else None, initial={"collection": request.GET.getlist("collection")})
    answer = None
    error = None
    sign_in_url = None
    collections: list[str] = []
    default = ["default"]
    picked: list[str] = form["collection"].value() or []
    headers: dict[str, str] = {}
    status = 400 if (form.is_bound and not form.is_valid()) else 200
    try:
        refused = _access_refused(request, asking=form.is_valid())
        if refused:
            status, error, headers = refused
            if status != 429:
                sign_in_url = reverse("login") + "?next=" + quote(request.get_full_path(), safe="/")
        else:
            caller = visibility.Caller.for_request(request)
            # The collections this visitor may read, and nothing of the others (not even their names).
            collections = list(visibility.readable(caller).values_list("name", flat=True))
            # Nothing ticked: the default collection as in the API, or all when it is not readable.
            default = ["default"] if "default" in collections else [visibility.EVERY]
            if form.is_valid():
                data = form.cleaned_data
                answer = answer_question(
                    question=data["q"],
                    caller=caller,
                    collections=data["collection"] or default,
                    k=data["k"] or 5,
                    trusted=request.user.is_authenticated,
                )
    except CollectionNotFound as exc:
        name = str(exc)
        error = "There is no collection you may read." if name == visibility.EVERY else f"No collection named {name!r}."
        status = 404
    except DatabaseError:
        logger.exception("search page: database unavailable")
        collections = []
        error, status = "The service is temporarily unavailable. Please try again in a few seconds.", 503
        headers = {"Retry-After": "5"}
    context = {
        "form": form,
        "answer": answer,
        "error": error,
        "sign_in_url": sign_in_url,
        "collections": collections,
        "picked": picked,
        "default_collections": json.dumps(default),
        "feedback": FEEDBACK_OUTCOMES.get(request.GET.get("feedback", "")),
    }
    response = render(request, "rag/search.html", context, status=status)
    for name, value in headers.items():
        response[name] = value
    # Defence in depth: even if document text ever slipped through unescaped, no inline script
    # or foreign source would run.
    response["Content-Security-Policy"] = (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )
    return response


class FeedbackForm(forms.Form):
    query_id = forms.IntegerField(min_value=1)
    rating = forms.ChoiceField(choices=[("up", "up"), ("down", "down")])
    comment = forms.CharField(required=False, max_length=2000)
    k = forms.IntegerField(required=False, min_value=1, max_value=settings.RAGSITE_MAX_K)  # the page's, if not 5


@require_POST
def feedback(request: HttpRequest) -> HttpResponse:
    """The search page's thumbs up and down (a plain form: no JavaScript needed), under the access
    rules and throttles of questions; a signed-in user's thumbs down evicts the cached answer.

    Post/Redirect/Get: once the vote is recorded, back (303) to the page of the same question and
    collections, with the thank-you; reloading that page asks again, it does not vote again.
    """
    context: dict = {"form": SearchForm(), "collections": []}
    refused = _access_refused(request, asking=True)
    if refused:
        status, context["error"], headers = refused
        response = render(request, "rag/search.html", context, status=status)
        for name, value in headers.items():
            response[name] = value
        return response
    form = FeedbackForm(request.POST)
    if not form.is_valid():
        context["error"] = "That feedback could not be read: " + "; ".join(
            f"{field}: {' '.join(errors)}" for field, errors in form.errors.items()
        )
        return render(request, "rag/search.html", context, status=400)
    data = form.cleaned_data
    try:
        given = give_feedback(
            caller=visibility.Caller.for_request(request),
            query_id=data["query_id"],
            rating=data["rating"],
            comment=data["comment"],
            user=request.user,
        )
    except UnknownQuery:
        context["error"] = "That answer is no longer known; ask again."
        return render(request, "rag/search.html", context, status=404)
    outcome = "evicted" if given.evicted else "thanks"
    response = HttpResponseRedirect(question_url(given.query, k=data["k"], feedback=outcome))
    response.status_code = 303  # See Other: the browser follows with a GET
    return response


def question_url(log: QueryLog, *, k: int | None = None, feedback: str | None = None) -> str:
    """The search page asking a logged question again, of the same collections."""
    params: list[tuple[str, object]] = [("q", log.question)]
    names = [name for name in log.collection.split(",") if name]
    if len(names) <= MAX_COLLECTIONS:  # more than the page takes: none ticked (the default)
        params += [("collection", name) for name in names]
    if k:
        params.append(("k", k))
    if feedback:
        params.append(("feedback", feedback))
    return reverse("search") + "?" + urlencode(params)
