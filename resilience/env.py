"""Typed readers for environment variables that fail loudly on bad values.

A typo in a deployment's environment should stop the service at start-up with a message that
names the variable, not surface later as a confusing runtime error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path


class EnvError(ValueError):
    """An environment variable holds a value that cannot be used."""


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(name: str, default: str = "") -> str:
    value = _raw(name)
    return default if value is None else value


def range_problem(name: str, number: float, minimum: float | None, maximum: float | None) -> str | None:
    """Why ``number`` (the value of ``name``) is outside [minimum, maximum], or None."""
    if minimum is not None and number < minimum:
        return f"{name} must be >= {shown_number(minimum)}, got {shown_number(number)}"
    if maximum is not None and number > maximum:
        return f"{name} must be <= {shown_number(maximum)}, got {shown_number(number)}"
    return None


def _in_range(name: str, number: float, minimum: float | None, maximum: float | None) -> None:
    problem = range_problem(name, number, minimum, maximum)
    if problem:
        raise EnvError(problem)


def shown_number(value: object) -> str:
    """A value as messages show it: 3600 for 3600.0, 1e+23 for 1e23; anything else as str()."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise EnvError(f"{name} must be an integer, got {value!r}") from None
    _in_range(name, number, minimum, maximum)
    return number


def env_float(name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
    """A finite number: inf and nan are refused like any other non-number."""
    value = _raw(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise EnvError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise EnvError(f"{name} must be a finite number, got {value!r}")
    _in_range(name, number, minimum, maximum)
    return number


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise EnvError(f"{name} must be one of {sorted(_TRUE | _FALSE)}, got {value!r}")


def env_choice(name: str, default: str, choices: Sequence[str]) -> str:
    value = env_str(name, default).lower()
    if value not in choices:
        raise EnvError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


LOG_LEVELS = ["debug", "info", "warning", "warn", "error", "critical", "notset"]


def env_log_level(name: str, default: str) -> str:
    """A logging level name (DEBUG, INFO, WARNING or WARN, ERROR, CRITICAL, NOTSET), upper-cased."""
    level = env_choice(name, default.lower(), LOG_LEVELS).upper()
    return "WARNING" if level == "WARN" else level


def env_path(name: str, default: Path) -> Path:
    """A folder's path, not created: a file there is refused, a missing folder is fine."""
    path = Path(env_str(name, str(default))).expanduser()
    if path.exists() and not path.is_dir():
        raise EnvError(f"{name}={path} is not a directory")
    return path


def writable_dir(path: Path, name: str) -> Path:
    """``path`` created if missing; EnvError naming ``name`` when it cannot be or is not writable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvError(f"{name}={path} cannot be created: {exc.strerror or exc}") from None
    if not (path.is_dir() and os.access(path, os.W_OK | os.X_OK)):
        raise EnvError(f"{name}={path} is not a writable directory")
    return path


def env_dir(name: str, default: Path) -> Path:
    """A directory the process can write to, created if missing."""
    return writable_dir(env_path(name, default), name)


def env_list(name: str, default: Sequence[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]
