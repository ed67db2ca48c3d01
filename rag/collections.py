"""Finding collections by name, for every surface that names one."""

from __future__ import annotations

from rag.models import Collection


class CollectionNotFound(Exception):
    pass


def get_collection(name: str, *, create: bool = False) -> Collection:
    """The collection called ``name``; created when ``create``, else CollectionNotFound."""
    if create:
        collection, _ = Collection.objects.get_or_create(name=name)
        return collection
    try:
        return Collection.objects.get(name=name)
    except Collection.DoesNotExist:
        raise CollectionNotFound(name) from None
