"""System checks (``manage.py check``, and every ``runserver``/``migrate``) for configuration
mistakes that would otherwise surface only at the first call to Ollama."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ValidationError

from resilience import config
from resilience.env import EnvError


def settings_from_environment(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The environment seeds the settings rows: refuse values the admin would refuse."""
    from resilience.models import SETTINGS_MODELS

    try:
        env = config.env_config()
    except EnvError as exc:
        return [checks.Error(str(exc), id="resilience.E001")]
    problems: list[checks.CheckMessage] = [
        checks.Warning(
            note,
            hint="Lower the environment variable; it only seeds the settings rows, which the admin edits.",
            id="resilience.W001",
        )
        for note in config.capped
    ]
    for model in SETTINGS_MODELS:
        row = model(**model.values_from(getattr(env, model.section)))
        for field, messages in row_errors(row).items():
            variable = config.env_name(model.config_class, field)
            problems.append(
                checks.Error(
                    f"{variable}: {' '.join(messages)}",
                    hint="Fix the environment variable, or edit the setting in the admin once migrated.",
                    id="resilience.E002",
                )
            )
    return problems


def row_errors(row: Any) -> dict[str, list[str]]:
    """What the admin's form would say of the row: its fields' validators (the maxima), then its rules."""
    errors: dict[str, list[str]] = {}
    for validate in (lambda: row.clean_fields(exclude=["id", "updated_at"]), row.clean):
        try:
            validate()
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                errors.setdefault(field, []).extend(m for m in messages if m not in errors.get(field, []))
    return errors


def register() -> None:
    checks.register(settings_from_environment)
