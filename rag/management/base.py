"""What every rag command shares: bad input and a database that cannot be reached are one line
(CommandError, exit 1), never a traceback."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import InterfaceError, OperationalError, connection

from rag.sources import is_utf8


def one_line(exc: BaseException) -> str:
    """The error's message on one line (psycopg's connection errors span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def is_text(value: str) -> bool:
    """Whether Postgres can take ``value``: no NUL, no lone surrogate (bytes that were not UTF-8)."""
    return is_utf8(value) and "\x00" not in value


class RagCommand(BaseCommand):
    """A command that needs the database: it says in one line (CommandError, exit 1) that the
    database cannot be reached, or what it refused part way, instead of a traceback; and it
    refuses option values that are not text (names that are looked up or stored)."""

    # Options that may name files whose names are any bytes (each file is judged on its own).
    raw_options: tuple[str, ...] = ()

    def execute(self, *args: Any, **options: Any) -> str | None:
        for name, value in options.items():
            values = value if isinstance(value, list | tuple) else [value]
            for item in values:
                if name not in self.raw_options and isinstance(item, str) and not is_text(item):
                    raise CommandError(f"{item!r} is not text (not UTF-8, or it holds a NUL character).")
        try:
            connection.ensure_connection()
        except (OperationalError, InterfaceError) as exc:
            raise CommandError(f"Database unreachable: {one_line(exc)}") from None
        try:
            return super().execute(*args, **options)
        except (OperationalError, InterfaceError) as exc:
            # The connection was lost, or a statement refused, part way: what was committed stays.
            raise CommandError(f"Database error: {one_line(exc)}") from None
