"""The settings singleton: one row per config section, edited in the admin, applied live."""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Callable
from dataclasses import fields
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Q

from resilience.config import base_url_problem, section_from_env
from resilience.env import env_bool

logger = logging.getLogger(__name__)

# One row each, edited in the admin and applied live by every process (resilience.live). The
# environment only seeds them when the database is created (migration 0002).


def shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value != "" else "empty"


def help_text(cls: type, name: str, text: str) -> str:
    """Help text ending with the documented default and the largest value, read from the config dataclass."""
    maximum = cls.maxima.get(name)  # type: ignore[attr-defined]
    limit = "" if maximum is None else f" At most {shown(maximum)}."
    return f"{text} Default: {shown(getattr(cls, name))}.{limit}"


def at_most(cls: type, name: str) -> list[MaxValueValidator]:
    """The field's validator of its section's maximum (``maxima`` of the config dataclass)."""
    return [MaxValueValidator(cls.maxima[name], message="Must be at most %(limit_value)s.")]  # type: ignore[attr-defined]


Rule = tuple[Callable[[Any], bool], str]
AT_LEAST_ONE: Rule = (lambda v: v >= 1, "Must be at least 1.")
AT_LEAST_ZERO: Rule = (lambda v: v >= 0, "Must be 0 or more.")
POSITIVE: Rule = (lambda v: v > 0, "Must be greater than 0.")
FRACTION: Rule = (lambda v: 0 < v <= 1, "Must be greater than 0 and at most 1.")
RATIO: Rule = (lambda v: 0 <= v <= 1, "Must be between 0 and 1.")


# Cloud metadata services answer on link-local addresses and well-known names: an Ollama URL
# pointing there would make the service fetch credentials on an admin's say-so.
METADATA_HOSTS = frozenset(["metadata", "metadata.google.internal", "instance-data", "instance-data.ec2.internal"])


def _link_local(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host.lower().rstrip(".") in METADATA_HOSTS
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # fd00::/8 holds the IPv6 metadata addresses (fd00:ec2::254).
    return address.is_link_local or (address.version == 6 and address in ipaddress.ip_network("fd00::/8"))


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be Ollama's base URL, or None.

    Django's URLValidator would refuse a bare host name such as ``http://ollama:11434`` (a
    Compose service), which is exactly what deployments use.
    """
    if not url or any(ch.isspace() for ch in url):
        return "Enter a URL without spaces, like http://127.0.0.1:11434."
    malformed = base_url_problem(url)  # an unclosed IPv6 bracket: urlsplit raises
    if malformed:
        return malformed
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "The URL must start with http:// or https://."
    try:
        port = parts.port
    except ValueError:
        return "The port must be a number between 0 and 65535."
    if not parts.hostname or port == 0 or parts.query or parts.fragment or parts.username:
        return "Enter a well-formed URL with a host and no query, fragment or credentials."
    if _link_local(parts.hostname) and not env_bool("RAGSITE_ALLOW_LINK_LOCAL_OLLAMA", False):
        return (
            "Link-local and cloud metadata addresses are refused; set RAGSITE_ALLOW_LINK_LOCAL_OLLAMA=true "
            "on the servers if Ollama really lives there."
        )
    return None


class SettingsRow(models.Model):
    """A singleton (always id 1) holding one config section; ``to_config()`` gives the dataclass."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    config_class: ClassVar[type]
    section: ClassVar[str]  # the RuntimeConfig attribute it fills
    rules: ClassVar[dict[str, Rule]] = {}

    class Meta:
        abstract = True
        constraints = [models.CheckConstraint(condition=Q(id=1), name="%(app_label)s_%(class)s_singleton")]

    def __str__(self) -> str:
        return str(self._meta.verbose_name)

    def clean(self) -> None:
        errors: dict[str, str] = {}
        for name, (valid, message) in self.rules.items():
            value = getattr(self, name)
            if value is not None and not valid(value):
                errors[name] = message
        errors.update(self.other_errors())
        if errors:
            raise ValidationError(errors)

    def other_errors(self) -> dict[str, str]:
        """Errors the per-field rules cannot express."""
        return {}

    def to_config(self) -> Any:
        return self.config_class(**self.config_values())

    def config_values(self) -> dict[str, Any]:
        """The row's values for its config section, each within its range.

        A row may hold what the form would refuse now (saved before a limit existed, or written in
        SQL): a value above its maximum is read as the maximum, one that breaks its rule (or is
        not a number) as the default, so that no call to Ollama fails on it.
        """
        defaults = self.config_class()
        maxima: dict[str, float] = self.config_class.maxima
        values = {f.name: getattr(self, f.name) for f in fields(self.config_class)}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            rule = self.rules.get(name)
            if not math.isfinite(value):
                safe = getattr(defaults, name)
            elif name in maxima and value > maxima[name]:
                safe = type(value)(maxima[name])
            elif rule is not None and not rule[0](value):
                safe = getattr(defaults, name)
            else:
                continue
            logger.warning("settings: %s %s=%s is out of range; using %s", self.section, name, value, safe)
            values[name] = safe
        return values

    @classmethod
    def values_from(cls, section: Any) -> dict[str, Any]:
        """Field values for a config section (the environment's, when seeding a database)."""
        return {f.name: getattr(section, f.name) for f in fields(section)}

    @classmethod
    def load(cls, *, version: str | None = None) -> Self:
        """The row, created from the environment if missing, cached per process.

        The cached copy is reused while ``version`` (a digest of the row that resilience.live
        reads for all sections in one query) is the one it was loaded at: an unchanged row costs
        nothing.
        """
        cached = _loaded.get(cls)
        if cached is not None and version is not None and cached[0] == version:
            return cached[1]  # type: ignore[return-value]
        row, _ = cls.objects.get_or_create(pk=1, defaults=cls.values_from(section_from_env(cls.config_class)))
        _loaded[cls] = (version, row)
        return row


_loaded: dict[type[SettingsRow], tuple[str | None, SettingsRow]] = {}
