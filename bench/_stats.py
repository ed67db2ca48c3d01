"""Small measuring helpers the benches share."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def pct(values: list[float], q: float) -> float:
    """The ``q``th percentile, NaN for no values."""
    return float(np.percentile(values, q)) if values else float("nan")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Milliseconds ``fn`` took, and what it returned."""
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1000, out


def unit(vectors: np.ndarray) -> np.ndarray:
    """The vectors scaled to length one, as float32."""
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)
