"""Database helpers shared by every layer."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from django.db import connection, transaction


def savepoint() -> AbstractContextManager[Any]:
    """A savepoint inside a caller's transaction, so a failed statement cannot poison the caller's
    work; none in autocommit, where a failed statement poisons nothing and BEGIN/COMMIT would only
    add round trips."""
    return transaction.atomic() if connection.in_atomic_block else nullcontext()
