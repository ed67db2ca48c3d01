"""Small measuring helpers the benches share."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def pct(values: list[float], q: float) -> float:
    """The ``q``th percentile, NaN for no values."""
    return float(np.percentile(values, q)) if values else float("nan")


def nearest_rank(values: list[float], q: float, *, empty: float = float("nan")) -> float:
    """The value at fraction ``q`` (0-1) of the sorted values, one that was measured (no
    interpolation between two); ``empty`` for no values."""
    if not values:
        return empty
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """Milliseconds ``fn(*args, **kwargs)`` took, and what it returned."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return (time.perf_counter() - t) * 1000, out


def load_average() -> str:
    """The machine's load averages over 1, 5 and 15 minutes, as the benches print them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def unit(vectors: np.ndarray) -> np.ndarray:
    """The vectors scaled to length one, as float32."""
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)
