"""The admin-edited settings applied live in every process, and the breakers seen across processes.

``config.current()`` asks ``source()`` for the configuration. At most once a second per process
(``CHECK_SECONDS``) it runs one cheap query: a digest of each of the four settings rows and the
newest breaker command id. Only a section whose digest changed is read again; any change is seen,
whether made in the admin, with ``update()`` or in SQL, and so is a rolled-back one. The same check applies
the breaker commands operators give in the admin (force open, reset), and every
``REPORT_SECONDS`` it writes this process's breaker snapshots for the admin to list. A saved change
therefore reaches a process at its next ``current()`` a second later at most, before the next
query uses it; no restart, no signal, no extra thread.

Reading never fails the caller: before ``migrate`` (no tables) or while the database cannot be
reached, the last configuration read (else the environment's) stays in force, the failure is
logged once, and the next attempt waits ``RETRY_SECONDS``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from resilience.config import RuntimeConfig

logger = logging.getLogger(__name__)

CHECK_SECONDS = 1.0
REPORT_SECONDS = 2.0
RETRY_SECONDS = 5.0
PRUNE_EVERY_SECONDS = 60.0
PRUNE_AFTER = timedelta(hours=1)  # reports of processes gone this long are deleted

HOST = socket.gethostname()[:255]


@contextmanager
def _savepoint() -> Iterator[None]:
    """Inside a caller's transaction, a savepoint: a failed read must not poison the caller's work."""
    with transaction.atomic() if connection.in_atomic_block else nullcontext():
        yield


class LiveSettings:
    """The per-process state of the database-backed settings; ``timer`` is swappable for tests."""

    timer: Callable[[], float] = time.monotonic

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refresher: int | None = None  # the thread refreshing now
        self._clear()

    def _clear(self) -> None:
        self.config: RuntimeConfig | None = None
        self._versions: tuple[Any, ...] | None = None
        self._last_command: int | None = None  # None: this process has not looked at commands yet
        self._next_check = 0.0
        self._next_report = 0.0
        self._next_prune = 0.0
        self._warned = False
        self._failing = False

    def source(self) -> RuntimeConfig | None:
        """The stored configuration, re-checked when due; None while it cannot be read."""
        if self._refresher == threading.get_ident():
            return self.config  # a refresh calling current() again (a breaker order builds its breaker)
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
                self._refresher = threading.get_ident()
                self._next_check = now + CHECK_SECONDS
                self._refresh(now)
        finally:
            self._refresher = None
            self._lock.release()
        return self.config

    def invalidate(self) -> None:
        """Check at the next ``source()`` (the admin calls it after a save in this process)."""
        self._next_check = 0.0
        self._next_report = 0.0

    def forget(self) -> None:
        """Back to a fresh process's state (tests)."""
        with self._lock:
            self._clear()

    # -- the check -------------------------------------------------------------------------------

    def _refresh(self, now: float) -> None:
        try:
            with _savepoint():
                versions, command_id = self._read_versions()
                if versions != self._versions:
                    self._load(versions)
                self._apply_commands(command_id)
        except Exception as exc:
            self._next_check = now + RETRY_SECONDS
            self._failed(exc)
            return
        if self._failing:
            logger.info("settings: reading them from the database again")
            self._failing = False
        if now >= self._next_report:
            self._next_report = now + REPORT_SECONDS
            try:
                with _savepoint():
                    self._report(now)
            except Exception as exc:
                logger.warning("breakers: could not report this process's breakers: %s", exc)

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

    def _read_versions(self) -> tuple[tuple[Any, ...], int]:
        from resilience.models import SETTINGS_MODELS, BreakerCommand

        columns = [f"(SELECT md5(t::text) FROM {m._meta.db_table} t WHERE id = 1)" for m in SETTINGS_MODELS]
        columns.append(f"(SELECT max(id) FROM {BreakerCommand._meta.db_table})")
        with connection.cursor() as cursor:
            cursor.execute("SELECT " + ", ".join(columns))
            row = cursor.fetchone()
        return tuple(row[:-1]), row[-1] or 0

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

    def _apply_commands(self, newest: int) -> None:
        from resilience.models import BreakerCommand

        if self._last_command is None:
            # A process starting during maintenance honours a force-open still in effect; older
            # orders were carried out by the processes that were running then.
            latest = BreakerCommand.objects.order_by("breaker", "-id").distinct("breaker")
            pending = [command for command in latest if command.action == BreakerCommand.FORCE_OPEN]
        elif newest > self._last_command:
            pending = list(BreakerCommand.objects.filter(id__gt=self._last_command).order_by("id"))
        else:
            return
        for command in pending:
            logger.warning(
                "breaker %s: %s (admin command %s)", command.breaker, command.get_action_display(), command.pk
            )
            command.apply()
        self._last_command = max([newest, self._last_command or 0, *(c.pk for c in pending)])

    def _report(self, now: float) -> None:
        from resilience.breaker import all_breakers
        from resilience.models import BreakerReport

        breakers = all_breakers()
        if breakers:
            seen = timezone.now()
            pid = os.getpid()
            rows = [BreakerReport.from_snapshot(HOST, pid, b.snapshot(), seen) for b in breakers.values()]
            BreakerReport.objects.bulk_create(
                rows,
                update_conflicts=True,
                unique_fields=["host", "pid", "breaker"],
                update_fields=[
                    f.name
                    for f in BreakerReport._meta.concrete_fields
                    if f.name not in ("id", "host", "pid", "breaker")
                ],
            )
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY_SECONDS
            BreakerReport.objects.filter(last_seen__lt=timezone.now() - PRUNE_AFTER).delete()


live = LiveSettings()
source = live.source
invalidate = live.invalidate


def refresh() -> RuntimeConfig | None:
    """Check now rather than within the second (after this process changed a setting)."""
    live.invalidate()
    return live.source()


def last_seen_cutoff(now: datetime | None = None) -> datetime:
    """Reports older than this are stale: the process is idle or gone."""
    from resilience.models import BreakerReport

    return (now or timezone.now()) - timedelta(seconds=BreakerReport.STALE_SECONDS)
