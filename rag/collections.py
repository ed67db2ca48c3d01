"""Finding collections by name, for every surface that names one; deleting one.

Who may read a collection is rag.visibility's business, not this module's.
"""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.db import transaction

from rag.models import CachedAnswer, Collection, Visibility


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


def delete_collection(*, collection: Collection) -> None:
    """Delete a collection, its documents, and every cached answer built (in part) from it."""
    with transaction.atomic():
        CachedAnswer.objects.filter(collection_ids__contains=[collection.pk]).delete()
        collection.delete()


def restrict_collection(*, name: str, groups: list[Group]) -> Collection:
    """Make the collection ``name`` (created if missing) readable only by these groups' members
    (and superusers, and keys scoped to it): before a document lands in it, nothing is public."""
    with transaction.atomic():
        collection, _ = Collection.objects.get_or_create(name=name)
        collection.visibility = Visibility.RESTRICTED
        collection.save(update_fields=["visibility"])
        collection.groups.add(*groups)
    return collection
