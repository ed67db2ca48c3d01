"""Postgres backend: django-prometheus's instrumented one, with a health check that costs no round trip.

With ``CONN_HEALTH_CHECKS`` Django checks a reused connection at the start of every request with
a ``SELECT 1``: one more round trip than a cached answer needs (rag.first_look). A connection the
server has closed (a restart, a terminated backend, an idle timeout) has something to read on its
socket, its last message or the end of the stream, while an idle healthy one has nothing: so the
check looks at the socket first, and only a connection with something to read pays the
``SELECT 1`` (which then fails, and Django connects afresh).
"""

from __future__ import annotations

import select

from django_prometheus.db.backends.postgresql import base


def _readable(fileno: int) -> bool:
    poller = select.poll()
    poller.register(fileno, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed or connection.broken:
            return False
        try:
            idle = not _readable(connection.pgconn.socket)
        except Exception:  # no socket to look at: ask the server
            idle = False
        return idle or super().is_usable()
