"""Breakers across processes: operators' orders to every process, and what each process reports."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db import models


class BreakerCommand(models.Model):
    """An operator's order to every process's breaker; each applies it at its next settings check."""

    FORCE_OPEN = "force_open"
    RESET = "reset"

    breaker = models.CharField(max_length=64)
    action = models.CharField(max_length=16, choices=[(FORCE_OPEN, "force open"), (RESET, "reset to closed")])
    requested_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.breaker}"


class BreakerReport(models.Model):
    """One breaker of one process as that process last reported it (resilience.orders)."""

    STALE_SECONDS = 60  # an idle process reports nothing: it shows as stale until its next request

    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    breaker = models.CharField(max_length=64)
    state = models.CharField(max_length=16)
    forced = models.BooleanField(default=False, help_text="Forced open by an operator.")
    total_calls = models.PositiveBigIntegerField(default=0)
    success_count = models.PositiveBigIntegerField("successes", default=0)
    failure_count = models.PositiveBigIntegerField("failures", default=0)
    rejected_calls = models.PositiveBigIntegerField("rejected", default=0)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_state_change = models.DateTimeField(null=True, blank=True)
    transitions = models.JSONField(default=list, help_text="The last few transitions, oldest first.")
    last_seen = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["breaker", "host", "pid"]
        constraints = [models.UniqueConstraint(fields=["host", "pid", "breaker"], name="breakerreport_unique")]

    def __str__(self) -> str:
        return f"{self.breaker} @ {self.host}:{self.pid}"

    def is_stale(self, now: datetime) -> bool:
        return (now - self.last_seen).total_seconds() > self.STALE_SECONDS

    @classmethod
    def from_snapshot(cls, host: str, pid: int, snapshot: dict[str, Any], seen: datetime) -> BreakerReport:
        changed = snapshot["last_state_change"]
        return cls(
            host=host,
            pid=pid,
            breaker=snapshot["name"],
            state=snapshot["state"],
            forced=snapshot["forced"],
            total_calls=snapshot["total_calls"],
            success_count=snapshot["success_count"],
            failure_count=snapshot["failure_count"],
            rejected_calls=snapshot["rejected_calls"],
            consecutive_failures=snapshot["consecutive_failures"],
            last_state_change=datetime.fromtimestamp(changed, tz=UTC) if changed else None,
            transitions=snapshot["transitions"][-5:],
            last_seen=seen,
        )
