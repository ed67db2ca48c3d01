"""Who may read which collection: the one place the rules live.

- A public collection is read by every caller allowed to query the service (rag.access decides
  who that is: anyone, or key holders only).
- A restricted collection is read by superusers, by members of its groups, and by API keys whose
  scope names it.
- An API key with "all collections" reads everything. A key writes only when it "may write", and
  then only to the collections its scope names (anywhere, creating collections too, with "all
  collections"). Management commands run as the operator and read everything.
- A collection a caller may not read is answered exactly like one that does not exist.

Every surface asks here: the answer pipeline resolves the collections of a question with
``readable_sql`` and ``collection_set`` in its first statement (rag.first_look; ``resolve`` does
the same in a query of its own), retrieval searches only the ids resolved here, and the documents
API, the search page, warm_cache and the admin's lists filter through ``readable``, ``documents``
and ``tagged``. The rules are
written once, as the ``readable`` queryset; the SQL form is compiled from it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.postgres.expressions import ArraySubquery
from django.db.models import Q, QuerySet

from rag.collections import CollectionNotFound
from rag.models import ApiKey, Collection, Document, Job, JobKind, Visibility

__all__ = [
    "ANONYMOUS",
    "EVERY",
    "OPERATOR",
    "Caller",
    "CollectionNotFound",
    "CollectionSet",
    "WriteRefused",
    "collection_for_write",
    "collection_set",
    "documents",
    "jobs",
    "readable",
    "readable_sql",
    "resolve",
    "tagged",
]

# In a list of collection names: every collection the caller may read.
EVERY = "*"


class WriteRefused(Exception):
    """The caller may read the collection but not change it."""


@dataclass(frozen=True)
class Caller:
    """Who is asking, as far as collections go."""

    everything: bool = False  # a superuser, an operator's command, a key for all collections
    user_id: int | None = None
    key_id: int | None = None
    key_writes: bool = False  # the key's "may write"

    @classmethod
    def for_key(cls, key: ApiKey) -> Caller:
        return cls(everything=key.all_collections, key_id=key.pk, key_writes=key.can_write)

    @classmethod
    def for_user(cls, user: Any) -> Caller:
        if user is None or not user.is_authenticated or not user.is_active:
            return ANONYMOUS
        if user.is_superuser:
            return cls(everything=True, user_id=user.pk)
        return cls(user_id=user.pk)

    @classmethod
    def for_request(cls, request: Any) -> Caller:
        """The caller of an API request (its key, else its session) or of a page (its session)."""
        key = getattr(request, "auth", None)
        if isinstance(key, ApiKey):
            return cls.for_key(key)
        return cls.for_user(getattr(request, "user", None))

    @property
    def is_key(self) -> bool:
        return self.key_id is not None


OPERATOR = Caller(everything=True)
ANONYMOUS = Caller()


def readable(caller: Caller) -> QuerySet[Collection]:
    """The collections ``caller`` may read."""
    collections = Collection.objects.all()
    if caller.everything:
        return collections
    granted = Q(visibility=Visibility.PUBLIC)
    if caller.is_key:
        scope = ApiKey.collections.through.objects.filter(apikey_id=caller.key_id)
        granted |= Q(pk__in=scope.values("collection_id"))
    elif caller.user_id is not None:
        memberships = Collection.groups.through.objects.filter(group__user=caller.user_id)
        granted |= Q(visibility=Visibility.RESTRICTED, pk__in=memberships.values("collection_id"))
    return collections.filter(granted)


@functools.lru_cache(maxsize=4096)
def readable_sql(caller: Caller) -> tuple[str, tuple[Any, ...]]:
    """``readable`` as SQL selecting the ids, with its parameters, for a statement of its own.

    Compiled once per caller (it costs more than the statement that embeds it): the SQL depends
    on nothing but the caller; who may read what is data it reads when it runs.
    """
    sql, params = readable(caller).order_by().values("pk").query.sql_with_params()
    return sql, tuple(params)


@dataclass(frozen=True)
class CollectionSet:
    """The collections one question is asked of, in id order: what retrieval searches and what
    the answer cache keys an answer by (ids and corpus versions)."""

    ids: tuple[int, ...]
    versions: tuple[int, ...]
    names: tuple[str, ...]  # aligned with ids

    @property
    def label(self) -> str:
        """The names as one string ("eng,hr"): an answer's ``collection``. Names hold no commas."""
        return ",".join(sorted(self.names))

    @property
    def sorted_names(self) -> list[str]:
        return sorted(self.names)

    def name_of(self, collection_id: int) -> str:
        return self.names[self.ids.index(collection_id)]


def resolve(caller: Caller, names: Sequence[str]) -> CollectionSet:
    """The collections called ``names`` (or ``[EVERY]``: all) that ``caller`` may read.

    CollectionNotFound names the first one that is missing or not readable: the same error.
    """
    wanted = set(names)
    rows = readable(caller)
    if wanted != {EVERY}:
        rows = rows.filter(name__in=wanted)
    return collection_set(names, rows.order_by("pk").values_list("pk", "corpus_version", "name"))


def collection_set(names: Sequence[str], found: Sequence[tuple[int, int, str]]) -> CollectionSet:
    """``resolve``'s answer from the (id, corpus version, name) rows, in id order, of the readable
    collections called ``names`` (all of them for ``[EVERY]``), however they were read."""
    wanted = set(names)
    missing = sorted(wanted - {EVERY} - {name for _, _, name in found})
    if missing:
        raise CollectionNotFound(missing[0])
    if not found:
        raise CollectionNotFound(EVERY)
    ids, versions, found_names = zip(*found, strict=True)
    return CollectionSet(tuple(ids), tuple(versions), tuple(found_names))


def documents(caller: Caller) -> QuerySet[Document]:
    """The documents of the collections ``caller`` may read."""
    return Document.objects.filter(collection__in=readable(caller))


def jobs(caller: Caller) -> QuerySet[Job]:
    """The background jobs ``caller`` may follow: uploads to collections it may read, or to one
    not created yet (it will be public); re-embedding and warm-up jobs, and uploads to a collection
    deleted since, operators only."""
    if caller.everything:
        return Job.objects.all()
    uploads = Job.objects.filter(kind=JobKind.INGEST).exclude(collection="")
    # A job knows its collection by id once it exists (rag.jobs): renamed or deleted since, the
    # collection still decides (a deleted one: operators only).
    known = Q(collection_pk__in=readable(caller).values("pk"))
    readable_names = readable(caller).values("name")
    not_yet = ~Q(collection__in=Collection.objects.values("name"))
    return uploads.filter(known | Q(collection_pk__isnull=True) & (Q(collection__in=readable_names) | not_yet))


def tagged(caller: Caller, rows: QuerySet, field: str = "collection_ids") -> QuerySet:
    """Rows tagged with the ids of the collections they came from (the query log, cached answers):
    only those whose every collection ``caller`` may read."""
    if caller.everything:
        return rows
    ids = ArraySubquery(readable(caller).order_by().values("pk"))
    return rows.filter(**{f"{field}__contained_by": ids}).exclude(**{field: []})


def collection_for_write(caller: Caller, name: str) -> Collection | None:
    """The collection ``caller`` may add documents to or delete them from.

    None when there is no such collection yet and the caller may create it (ingestion does).
    Raises CollectionNotFound (also for one the caller may not read) or WriteRefused.
    Sessions reach here only with the staff permission rag.access asks for.
    """
    if caller.is_key and not caller.key_writes:
        raise WriteRefused("This API key may only read: it has no write scope.")
    collection = Collection.objects.filter(name=name).first()
    if collection is None:
        if caller.is_key and not caller.everything:
            raise CollectionNotFound(name)  # a key scoped to some collections creates none
        return None
    if not readable(caller).filter(pk=collection.pk).exists():
        raise CollectionNotFound(name)
    if caller.is_key and not caller.everything:
        scope = ApiKey.collections.through.objects.filter(apikey_id=caller.key_id, collection_id=collection.pk)
        if not scope.exists():
            raise WriteRefused(f"This API key may not write to collection {name!r}: it is not in its scope.")
    return collection
