"""Operators' breaker orders carried out in every process, and each process's breakers reported.

This is the one place where an admin action reaches a breaker. An operator's order (force open,
reset) is a ``BreakerCommand`` row; ``sync()`` looks for new rows at most once a second and carries
them out on this process's breakers, and every ``REPORT_SECONDS`` it writes this process's breaker
snapshots (``BreakerReport``) for the admin to list.

Who calls ``sync()``: ``BreakerOrdersMiddleware`` before every request (so an order reaches a web
worker before its next request uses a breaker), task workers before every job, and the admin
after it gives an order. It never fails its caller: a database error is logged and retried later.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from resilience.breaker import CLOSED, all_breakers, get_breaker
from resilience.db import savepoint
from resilience.models import BreakerCommand, BreakerReport

logger = logging.getLogger(__name__)

CHECK_SECONDS = 1.0
REPORT_SECONDS = 2.0
RETRY_SECONDS = 5.0
PRUNE_EVERY_SECONDS = 60.0
PRUNE_AFTER = timedelta(hours=1)  # reports of processes gone this long are deleted

HOST = socket.gethostname()[:255]
PROBE_PREFIX = "/health"


def carry_out(command: BreakerCommand) -> None:
    """Carry one order out on this process's breaker."""
    breaker = get_breaker(command.breaker)
    by = f" by {command.requested_by}" if command.requested_by else ""
    if command.action == BreakerCommand.FORCE_OPEN:
        breaker.force_open(f"forced open in the admin{by}")
        return
    snapshot = breaker.snapshot()
    if snapshot["state"] != CLOSED or snapshot["forced"]:
        breaker.reset(f"reset in the admin{by}")


class BreakerOrders:
    """This process's view of the orders and its reports; ``timer`` is swappable for tests."""

    timer: Callable[[], float] = time.monotonic

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self._last_command: int | None = None  # None: this process has not looked at orders yet
        self._next_check = 0.0
        self._next_report = 0.0
        self._next_prune = 0.0

    def forget(self) -> None:
        """Back to a fresh process's state (tests)."""
        with self._lock:
            self._clear()

    def sync(self, *, now: bool = False) -> None:
        """Carry out new orders and report this process's breakers, when due (or ``now``)."""
        if not now and self.timer() < self._next_check:
            return
        if not self._lock.acquire(blocking=now):
            return  # another thread of this process is at it
        try:
            current = self.timer()
            if now:
                self._next_check = self._next_report = 0.0
            if current >= self._next_check:
                self._next_check = current + CHECK_SECONDS
                self._run(current)
        finally:
            self._lock.release()

    def _run(self, current: float) -> None:
        try:
            with savepoint():
                self._apply_new_orders()
        except Exception as exc:
            self._next_check = current + RETRY_SECONDS
            logger.warning("breakers: could not read operators' orders: %s", exc, exc_info=not _expected(exc))
            return
        if current >= self._next_report:
            self._next_report = current + REPORT_SECONDS
            try:
                with savepoint():
                    self._report(current)
            except Exception as exc:
                logger.warning(
                    "breakers: could not report this process's breakers: %s", exc, exc_info=not _expected(exc)
                )

    def _apply_new_orders(self) -> None:
        if self._last_command is None:
            # A process starting during maintenance honours a force-open still in effect; older
            # orders were carried out by the processes that were running then.
            latest = list(BreakerCommand.objects.order_by("breaker", "-id").distinct("breaker"))
            pending = [command for command in latest if command.action == BreakerCommand.FORCE_OPEN]
            newest = max((command.pk for command in latest), default=0)
        else:
            pending = list(BreakerCommand.objects.filter(id__gt=self._last_command).order_by("id"))
            newest = max((command.pk for command in pending), default=self._last_command)
        for command in pending:
            logger.warning(
                "breaker %s: %s (admin command %s)", command.breaker, command.get_action_display(), command.pk
            )
            carry_out(command)
        self._last_command = newest

    def _report(self, current: float) -> None:
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
        if current >= self._next_prune:
            self._next_prune = current + PRUNE_EVERY_SECONDS
            prune_reports()


def prune_reports() -> int:
    """Delete the reports of processes gone for PRUNE_AFTER (also done by the housekeeping job)."""
    deleted, _ = BreakerReport.objects.filter(last_seen__lt=timezone.now() - PRUNE_AFTER).delete()
    return deleted


def _expected(exc: Exception) -> bool:
    """A missing table or a down database is worth a line; anything else, its traceback."""
    return isinstance(exc, DatabaseError | RuntimeError)


orders = BreakerOrders()
sync = orders.sync


def give(action: str, breakers: list[str], *, requested_by: str = "") -> None:
    """Order every process's breakers; this process carries it out now, the others within a second."""
    BreakerCommand.objects.bulk_create(
        BreakerCommand(breaker=name, action=action, requested_by=requested_by) for name in breakers
    )
    sync(now=True)


class BreakerOrdersMiddleware:
    """Carries out operators' breaker orders (at most one check a second) before each request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Probes never touch the database (a liveness check must answer while it is down).
        if not request.path.startswith(PROBE_PREFIX):
            sync()
        return self.get_response(request)
