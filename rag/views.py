"""The search page: a plain server-rendered form that works without JavaScript."""

from __future__ import annotations

import logging

from django import forms
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from rag.answers import answer_question
from rag.collections import CollectionNotFound
from rag.models import Collection, collection_name_validator

logger = logging.getLogger(__name__)


class SearchForm(forms.Form):
    q = forms.CharField(label="Question", max_length=settings.RAGSITE_MAX_QUESTION_CHARS, strip=True)
    collection = forms.CharField(required=False, max_length=64, validators=[collection_name_validator])
    k = forms.IntegerField(required=False, min_value=1, max_value=settings.RAGSITE_MAX_K)


def search(request: HttpRequest) -> HttpResponse:
    form = SearchForm(request.GET or None)
    answer = None
    error = None
    status = 400 if (form.is_bound and not form.is_valid()) else 200
    try:
        collections = list(Collection.objects.values_list("name", flat=True))
        if form.is_valid():
            data = form.cleaned_data
            answer = answer_question(
                question=data["q"],
                collection_name=data["collection"] or "default",
                k=data["k"] or 5,
                trusted=request.user.is_authenticated,
            )
    except CollectionNotFound:
        error, status = f"No collection named {form.cleaned_data['collection']!r}.", 404
    except DatabaseError:
        logger.exception("search page: database unavailable")
        collections = []
        error, status = "The service is temporarily unavailable. Please try again in a few seconds.", 503
    context = {"form": form, "answer": answer, "error": error, "collections": collections}
    response = render(request, "rag/search.html", context, status=status)
    if status == 503:
        response["Retry-After"] = "5"
    # Defence in depth: even if document text ever slipped through unescaped, no inline script
    # or foreign source would run.
    response["Content-Security-Policy"] = (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )
    return response
