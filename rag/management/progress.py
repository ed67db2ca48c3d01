"""The progress display shared by the long-running commands (ingest, warm_cache, reembed)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand


class Progress:
    """A tqdm bar on a terminal, with failures written above it; just the failures elsewhere.

    Used as a context manager: the bar is closed however the command ends.
    """

    def __init__(self, command: BaseCommand, options: dict[str, Any], *, total: int, unit: str, desc: str) -> None:
        self.command = command
        self.bar = None
        wanted = not options.get("no_progress") and options.get("verbosity", 1) > 0
        if total and wanted and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=unit, desc=desc, file=sys.stderr)

    def advance(self, count: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def failed(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            self.command.stderr.write(message)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.close()
