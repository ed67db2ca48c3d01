"""The admin-edited settings, applied live in every process.

``config.current()`` asks ``source()`` for the configuration. At most once a second per process
(``CHECK_SECONDS``) it runs one cheap query: a digest of each settings row. Only a section whose
digest changed is read again; any change is seen, whether made in the admin, with ``update()`` or
in SQL, and so is a rolled-back one. A saved change therefore reaches a process at its next
``current()`` a second later at most; no restart, no signal, no extra thread.

Reading is all this module does: it writes nothing and changes no breaker. Operators' breaker
orders and the processes' breaker reports travel separately (``resilience.orders``).

Reading never fails the caller: before ``migrate`` (no tables) or while the database cannot be
reached, the last configuration read (else the environment's) stays in force, the failure is
logged once, and the next attempt waits ``RETRY_SECONDS``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, connection

from resilience.config import RuntimeConfig
from resilience.db import savepoint

logger = logging.getLogger(__name__)

CHECK_SECONDS = 1.0
RETRY_SECONDS = 5.0


class LiveSettings:
    """The per-process state of the database-backed settings; ``timer`` is swappable for tests."""

    timer: Callable[[], float] = time.monotonic

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self.config: RuntimeConfig | None = None
        self._versions: tuple[Any, ...] | None = None
        self._next_check = 0.0
        self._warned = False
        self._failing = False

    def source(self) -> RuntimeConfig | None:
        """The stored configuration, re-checked when due; None while it cannot be read."""
        # Threads arriving during a refresh carry on with what is known, except before the first
        # read: a new worker's first requests must not run on the environment's settings.
        first_read_running = self.config is None and self._lock.locked()
        if self.timer() < self._next_check and not first_read_running:
            return self.config
        if not self._lock.acquire(blocking=self.config is None):
            return self.config
        try:
            now = self.timer()
            if now >= self._next_check:  # not done meanwhile by the thread we waited for
                self._next_check = now + CHECK_SECONDS
                self._refresh(now)
        finally:
            self._lock.release()
        return self.config

    def invalidate(self) -> None:
        """Check at the next ``source()`` (the admin calls it after a save in this process)."""
        self._next_check = 0.0

    def forget(self) -> None:
        """Back to a fresh process's state (tests)."""
        with self._lock:
            self._clear()

    def _refresh(self, now: float) -> None:
        try:
            with savepoint():
                versions = self._read_versions()
                if versions != self._versions:
                    self._load(versions)
        except Exception as exc:
            self._next_check = now + RETRY_SECONDS
            self._failed(exc)
            return
        if self._failing:
            logger.info("settings: reading them from the database again")
            self._failing = False

    def _failed(self, exc: Exception) -> None:
        self._failing = True
        if self._warned:
            logger.debug("settings: database unreadable: %s", exc)
            return
        self._warned = True
        fallback = "the last ones read" if self.config is not None else "the environment's"
        # A bug is worth a traceback; a missing table or a down database is not.
        logger.warning(
            "settings: cannot read them from the database (%s); using %s until it can be read",
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            fallback,
            exc_info=not isinstance(exc, DatabaseError | RuntimeError),
        )

    def _read_versions(self) -> tuple[Any, ...]:
        from resilience.models import SETTINGS_MODELS

        columns = [f"(SELECT md5(t::text) FROM {m._meta.db_table} t WHERE id = 1)" for m in SETTINGS_MODELS]
        with connection.cursor() as cursor:
            cursor.execute("SELECT " + ", ".join(columns))
            return tuple(cursor.fetchone())

    def _load(self, versions: tuple[Any, ...]) -> None:
        from resilience.models import SETTINGS_MODELS

        sections = {
            model.section: model.load(version=version).to_config()
            for model, version in zip(SETTINGS_MODELS, versions, strict=True)
        }
        config = RuntimeConfig(**sections)
        if self.config is not None and config != self.config:
            changed = [name for name in sections if getattr(config, name) != getattr(self.config, name)]
            logger.info("settings changed in the admin: %s", ", ".join(changed))
        self.config = config
        self._versions = versions


live = LiveSettings()
source = live.source
invalidate = live.invalidate


def refresh() -> RuntimeConfig | None:
    """Check now rather than within the second (after this process changed a setting)."""
    live.invalidate()
    return live.source()
