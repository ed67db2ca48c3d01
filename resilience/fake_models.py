"""What the fake Ollama's models return, with no model loaded: deterministic embeddings and answers.

resilience/fake_ollama.py describes them; resilience/fake_ollama_http.py serves them.
"""

from __future__ import annotations

import hashlib
import math
import re
from functools import lru_cache
from typing import Any

_WORD = re.compile(r"\w+")
_PASSAGE = re.compile(r"^\s*\[(\d+)\]\s*(.*?)(?=^\s*\[\d+\]|\n\s*\n|\Z)", re.M | re.S)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@lru_cache(maxsize=65536)
def _feature_hash(feature: str) -> int:
    return int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")


@lru_cache(maxsize=4096)
def fake_embedding(text: str, dim: int = 384) -> tuple[float, ...]:
    """The fake's vector for ``text``: hashed words (weight 1) and char trigrams (0.5), normalised."""
    vec = [0.0] * dim
    for word in _WORD.findall(text.lower()):
        padded = f"#{word}#"
        features = [(f"w:{word}", 1.0)] + [(f"c:{padded[i : i + 3]}", 0.5) for i in range(len(padded) - 2)]
        for feature, weight in features:
            h = _feature_hash(feature)
            vec[h % dim] += weight if (h >> 63) & 1 else -weight
    norm = math.sqrt(sum(x * x for x in vec))
    if norm == 0:
        vec[0], norm = 1.0, 1.0  # no words: a fixed unit vector rather than an unnormalisable zero
    return tuple(x / norm for x in vec)


def fake_answer(messages: list[dict[str, Any]]) -> str:
    """ "According to [n], <first sentence of the first numbered passage>", deterministically."""
    texts = [str(m.get("content", "")) for m in messages if isinstance(m, dict)]
    users = [str(m.get("content", "")) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    for text in [*users[-1:], *texts]:
        match = _PASSAGE.search(text)
        if match and match.group(2).strip():
            passage = " ".join(match.group(2).split())
            return f"According to [{match.group(1)}], {_SENTENCE_END.split(passage)[0]}"
    return "I found no numbered passages to answer from."


def _model_key(name: str) -> str:
    return name if ":" in name else f"{name}:latest"
