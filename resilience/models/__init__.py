"""Rows the resilience layer keeps in Postgres, so every worker and instance shares them."""

from resilience.models.base import SettingsRow, url_problem
from resilience.models.breakers import BreakerCommand, BreakerReport
from resilience.models.settings import (
    SETTINGS_MODELS,
    AccessSettings,
    BreakerSettings,
    CacheSettings,
    JobSettings,
    PoolSettings,
    ProviderSettings,
)

__all__ = [
    "SETTINGS_MODELS",
    "AccessSettings",
    "BreakerCommand",
    "BreakerReport",
    "BreakerSettings",
    "CacheSettings",
    "JobSettings",
    "PoolSettings",
    "ProviderSettings",
    "SettingsRow",
    "url_problem",
]
