"""Runtime configuration of the model providers and the resilience layer.

Each section is a frozen dataclass. Its defaults are the documented defaults; every field can be
overridden by an environment variable named ``RAGSITE_<SECTION>_<FIELD>`` (for example
``RAGSITE_BREAKER_FAILURE_THRESHOLD``), except the Ollama URL, which is ``OLLAMA_BASE_URL``.

``current()`` is the one place the rest of the code reads settings from, and reading has no side
effects. The environment only seeds a fresh database: once the settings tables exist,
``current()`` returns the rows operators edit in the admin, re-checked at most once a second per
process (``resilience.live``), and falls back to the environment while the database cannot be read.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from resilience.env import EnvError, env_bool, env_choice, env_float, env_int, env_str, range_problem, shown_number

logger = logging.getLogger(__name__)

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
LOCAL_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
DEFAULT_OLLAMA_EMBEDDING_MODEL = "all-minilm"
DEFAULT_OLLAMA_GENERATION_MODEL = "llama3.2"

# Every numeric field has a largest value (``maxima`` of its section): it fits the field's
# database column (an integer) and stays operationally sane (no timeout beyond an hour, which
# would also overflow the socket's clock). The admin's form refuses a value beyond it, and a
# stored row beyond it is clamped when read (resilience.models). A seed variable beyond it is
# clamped with a warning (``manage.py check`` lists it), since the rows are the source of truth;
# with RAGSITE_SETTINGS_SOURCE=environment, where the variable is the setting, it stops start-up.
HOUR = 3600
DAY = 86400
YEAR = 365 * DAY

# Ollama's keep_alive: 0 unloads at once, -1 keeps the model loaded; a finite duration is at most
# a day (longer is what -1 is for).
DURATION = re.compile(r"^(-1|0|\d+|(\d+(\.\d+)?(ms|s|m|h))+)$")
KEEP_ALIVE_MAX = "24h"
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str) -> float | None:
    """Seconds of an Ollama duration (30s, 5m, 1h30m, 300 = seconds, -1), None when malformed."""
    text = text.strip()
    if not DURATION.match(text):
        return None
    if re.fullmatch(r"-?\d+", text):
        return float(text)
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text))


def keep_alive_problem(text: str) -> str | None:
    """Why ``text`` cannot be Ollama's keep_alive, or None."""
    seconds = duration_seconds(text)
    if seconds is None:
        return "Use a duration such as 30s, 5m, 1h, 0 (unload at once) or -1 (keep loaded)."
    if seconds > duration_seconds(KEEP_ALIVE_MAX):  # type: ignore[operator]
        return f"At most {KEEP_ALIVE_MAX}; use -1 to keep the model loaded."
    return None


def base_url_problem(url: str) -> str | None:
    """Why ``url`` cannot even be parsed as a URL (an unclosed IPv6 bracket), or None."""
    try:
        urlsplit(url)
    except ValueError as exc:
        return f"Enter a well-formed URL ({exc})."
    return None


@dataclass(frozen=True)
class ProviderConfig:
    """Which backends embed and answer, and where Ollama lives."""

    ollama_base_url: str = DEFAULT_OLLAMA_URL
    embedding_backend: str = "local"  # local | ollama
    embedding_model: str = ""  # empty: the backend's default model
    embedding_batch_size: int = 64
    generation_backend: str = "extractive"  # extractive | ollama
    generation_model: str = DEFAULT_OLLAMA_GENERATION_MODEL
    keep_alive: str = "5m"
    num_ctx: int = 4096

    maxima: ClassVar[dict[str, float]] = {"embedding_batch_size": 4096, "num_ctx": 1_048_576}

    @property
    def resolved_embedding_model(self) -> str:
        if self.embedding_model:
            return self.embedding_model
        if self.embedding_backend == "ollama":
            return DEFAULT_OLLAMA_EMBEDDING_MODEL
        return LOCAL_EMBEDDING_MODEL

    @property
    def embedder_name(self) -> str:
        """The name chunks record (``local/all-MiniLM-L6-v2``), as rag.embeddings builds it."""
        return f"{self.embedding_backend}/{self.resolved_embedding_model}"


@dataclass(frozen=True)
class BreakerConfig:
    """Circuit breaker thresholds, shared by every breaker (embed, chat)."""

    enabled: bool = True
    failure_threshold: int = 5
    failure_rate_threshold: float = 0.5
    window_size: int = 10
    recovery_timeout: float = 60.0
    half_open_max_calls: int = 3
    success_threshold: int = 3
    slow_call_seconds: float = 0.0  # 0 turns slow-call counting off

    maxima: ClassVar[dict[str, float]] = {
        "failure_threshold": 1000,
        "window_size": 10_000,
        "recovery_timeout": HOUR,
        "half_open_max_calls": 1000,
        "success_threshold": 1000,
        "slow_call_seconds": HOUR,
    }


@dataclass(frozen=True)
class PoolConfig:
    """The pooled HTTP session to Ollama: pool sizes, timeouts and retries."""

    pool_connections: int = 100
    pool_maxsize: int = 20
    pool_block: bool = False
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_retries: int = 3
    backoff_factor: float = 0.5
    backoff_jitter: float = 0.25
    backoff_max: float = 10.0
    retry_statuses: tuple[int, ...] = (429, 502, 503, 504)
    retry_after_max: float = 30.0
    retry_budget_ratio: float = 0.2
    retry_budget_min: int = 3
    retry_budget_window: float = 10.0

    maxima: ClassVar[dict[str, float]] = {
        "pool_connections": 1000,
        "pool_maxsize": 1000,
        "connect_timeout": HOUR,
        "read_timeout": HOUR,
        "max_retries": 100,
        "backoff_factor": HOUR,
        "backoff_jitter": HOUR,
        "backoff_max": HOUR,
        "retry_after_max": HOUR,
        "retry_budget_min": 1000,
        "retry_budget_window": HOUR,
    }


@dataclass(frozen=True)
class CacheConfig:
    """The semantic answer cache."""

    enabled: bool = True
    similarity_threshold: float = 0.95
    max_entries: int = 1000
    ttl_seconds: int = 3600
    serve_stale_seconds: int = 86400
    embedding_max_entries: int = 200_000  # the embedding cache (chunks' and questions' vectors)

    maxima: ClassVar[dict[str, float]] = {
        "max_entries": 1_000_000,
        "ttl_seconds": YEAR,
        "serve_stale_seconds": YEAR,
        "embedding_max_entries": 100_000_000,
    }


@dataclass(frozen=True)
class AccessConfig:
    """Who may query, and the API throttles (DRF rates like "120/minute"; empty turns one off)."""

    queries_require_key: bool = False
    ip_rate: str = "120/minute"
    key_rate: str = "1200/minute"

    maxima: ClassVar[dict[str, float]] = {}


@dataclass(frozen=True)
class JobsConfig:
    """Background jobs: how long they wait for embeddings to come back, and what is kept how long."""

    max_attempts: int = 10
    retry_delay_seconds: float = 10.0  # before the first retry; doubles with each attempt
    retry_delay_max_seconds: float = 600.0
    query_log_retention_days: int = 30
    job_retention_days: int = 7

    maxima: ClassVar[dict[str, float]] = {
        "max_attempts": 1000,
        "retry_delay_seconds": DAY,
        "retry_delay_max_seconds": DAY,
        "query_log_retention_days": 3650,
        "job_retention_days": 3650,
    }


@dataclass(frozen=True)
class RuntimeConfig:
    provider: ProviderConfig = field(default_factory=ProviderConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)


# Environment section name for each config class (RAGSITE_<SECTION>_<FIELD>).
SECTIONS: dict[type, str] = {
    BreakerConfig: "BREAKER",
    PoolConfig: "POOL",
    CacheConfig: "CACHE",
    AccessConfig: "ACCESS",
    JobsConfig: "JOBS",
}

# Provider fields keep the names clients already use.
PROVIDER_ENV = {
    "ollama_base_url": "OLLAMA_BASE_URL",
    "embedding_backend": "RAGSITE_EMBEDDING_BACKEND",
    "embedding_model": "RAGSITE_EMBEDDING_MODEL",
    "embedding_batch_size": "RAGSITE_EMBEDDING_BATCH_SIZE",
    "generation_backend": "RAGSITE_GENERATION_BACKEND",
    "generation_model": "RAGSITE_GENERATION_MODEL",
    "keep_alive": "RAGSITE_GENERATION_KEEP_ALIVE",
    "num_ctx": "RAGSITE_GENERATION_NUM_CTX",
}

BACKEND_CHOICES = {
    "embedding_backend": ("local", "ollama"),
    "generation_backend": ("extractive", "ollama"),
}

C = TypeVar("C")


def env_name(cls: type, field_name: str) -> str:
    if cls is ProviderConfig:
        return PROVIDER_ENV[field_name]
    return f"RAGSITE_{SECTIONS[cls]}_{field_name.upper()}"


def _read(name: str, default: Any, maximum: float | None, strict: bool) -> Any:
    if isinstance(default, bool):
        return env_bool(name, default)
    if isinstance(default, int):
        return _at_most(name, env_int(name, default), maximum, strict)
    if isinstance(default, float):
        return _at_most(name, env_float(name, default), maximum, strict)
    if isinstance(default, tuple):
        raw = env_str(name, "")
        if not raw:
            return default
        try:
            return tuple(int(part) for part in raw.split(",") if part.strip())
        except ValueError:
            raise EnvError(f"{name} must be a comma-separated list of integers") from None
    return env_str(name, default)


# What the environment asked beyond a limit and what is used instead, one line each (from the
# last from_env(); ``manage.py check`` shows them as warnings).
capped: list[str] = []


def _cap(name: str, asked: str, used: Any, strict: bool, refusal: str) -> Any:
    if strict:
        raise EnvError(refusal)
    note = f"{name}={asked} is above its limit; {shown_number(used)} is used (the admin refuses more)."
    if note not in capped:
        capped.append(note)
        logger.warning("settings: %s", note)
    return used


def _at_most(name: str, number: float, maximum: float | None, strict: bool) -> Any:
    refusal = None if maximum is None else range_problem(name, number, None, maximum)
    if refusal is None:
        return number
    return _cap(name, shown_number(number), type(number)(maximum), strict, refusal)


def section_from_env(cls: type[C], *, strict: bool | None = None) -> C:
    """Build one config section from its defaults overridden by the environment.

    A number beyond its section's maximum (or a keep_alive beyond KEEP_ALIVE_MAX) is an EnvError
    when ``strict`` (by default: when the environment is the settings source), else the limit is
    used and noted in ``capped``.
    """
    if strict is None:
        strict = settings_source() == "environment"
    defaults = cls()
    maxima: dict[str, float] = getattr(cls, "maxima", {})
    values = {
        f.name: _read(env_name(cls, f.name), getattr(defaults, f.name), maxima.get(f.name), strict) for f in fields(cls)
    }
    for name, choices in BACKEND_CHOICES.items():
        if name in values and values[name] not in choices:
            raise EnvError(f"{env_name(cls, name)} must be one of {list(choices)}, got {values[name]!r}")
    if cls is ProviderConfig:
        variable = env_name(cls, "keep_alive")
        problem = keep_alive_problem(values["keep_alive"])
        if problem and duration_seconds(values["keep_alive"]) is not None:  # only too long
            refusal = f"{variable}={values['keep_alive']!r}: {problem}"
            values["keep_alive"] = _cap(variable, values["keep_alive"], KEEP_ALIVE_MAX, strict, refusal)
        elif problem:
            raise EnvError(f"{variable}={values['keep_alive']!r}: {problem}")
        problem = base_url_problem(values["ollama_base_url"])
        if problem:
            raise EnvError(f"{env_name(cls, 'ollama_base_url')}={values['ollama_base_url']!r}: {problem}")
    return cls(**values)


def from_env() -> RuntimeConfig:
    """The environment's settings: strict about limits only when they are the settings in force
    (RAGSITE_SETTINGS_SOURCE=environment); otherwise they seed rows, and are capped."""
    capped.clear()
    return RuntimeConfig(
        provider=section_from_env(ProviderConfig),
        breaker=section_from_env(BreakerConfig),
        pool=section_from_env(PoolConfig),
        cache=section_from_env(CacheConfig),
        access=section_from_env(AccessConfig),
        jobs=section_from_env(JobsConfig),
    )


_override: RuntimeConfig | None = None
_env_config: RuntimeConfig | None = None
# The database-backed source (resilience.live), installed by ResilienceConfig.ready() once the
# models can be used. It returns the admin-edited configuration, or None while it cannot be read.
_live_source: Callable[[], RuntimeConfig | None] | None = None
_source: str | None = None
SETTINGS_SOURCES = ("database", "environment")


def use_live_source(source: Callable[[], RuntimeConfig | None]) -> None:
    """Read the configuration from ``source`` (the admin's rows) from now on."""
    global _live_source
    _live_source = source


def settings_source() -> str:
    """``database`` (the admin's rows, the default) or ``environment`` (RAGSITE_SETTINGS_SOURCE).

    ``environment`` makes a process ignore the stored rows, for a benchmark or a test server that
    must run with exactly its environment; breaker orders from the admin still reach it
    (resilience.orders).
    """
    global _source
    if _source is None:
        _source = env_choice("RAGSITE_SETTINGS_SOURCE", "database", SETTINGS_SOURCES)
    return _source


def env_config() -> RuntimeConfig:
    """The environment's configuration: what a fresh database is seeded with, and the fallback."""
    global _env_config
    if _env_config is None:
        _env_config = from_env()
    return _env_config


def current() -> RuntimeConfig:
    """The configuration in force now: an override (tests, benchmarks), else the admin's, else the environment's."""
    if _override is not None:
        return _override
    if _live_source is None or settings_source() == "environment":
        return env_config()
    stored = _live_source()
    return env_config() if stored is None else stored


def override(config: RuntimeConfig | None) -> None:
    """Replace the configuration in force (None returns to the environment's)."""
    global _override
    _override = config


def replace(config: RuntimeConfig, **sections: Any) -> RuntimeConfig:
    """A copy of ``config`` with some sections' fields changed: replace(c, pool={"read_timeout": 1})."""
    changes = {name: dataclasses.replace(getattr(config, name), **values) for name, values in sections.items()}
    return dataclasses.replace(config, **changes)
