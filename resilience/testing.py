"""``saved_settings``: the admin-edited settings changed for the duration of a test or a benchmark.

The fake Ollama they run against is in resilience/fake_ollama.py.
"""

from __future__ import annotations

import contextlib
from typing import Any


@contextlib.contextmanager
def saved_settings(**sections: dict[str, Any]):
    """Change the admin-edited settings rows (committed) for the duration, then restore them.

    ``saved_settings(provider={"generation_backend": "ollama"}, breaker={"failure_threshold": 2})``.
    Every process using the database (a gunicorn started by a test or a benchmark) applies the
    change within a second or two, as it would an operator's edit in the admin.
    """
    from resilience import live, models

    rows = {
        "provider": models.ProviderSettings,
        "breaker": models.BreakerSettings,
        "pool": models.PoolSettings,
        "cache": models.CacheSettings,
        "access": models.AccessSettings,
        "jobs": models.JobSettings,
    }
    saved: list[tuple[Any, dict[str, Any]]] = []
    try:
        for section, values in sections.items():
            row = rows[section].load()
            saved.append((row, {name: getattr(row, name) for name in values}))
            for name, value in values.items():
                setattr(row, name, value)
            row.save()
        live.refresh()  # this process at once, not within the second
        yield
    finally:
        for row, values in saved:
            for name, value in values.items():
                setattr(row, name, value)
            row.save()
        live.refresh()
