"""The near-miss guard of the semantic cache.

Sentence embeddings place "How do I start a thread?" and "How do I stop a thread?", or a question
and its negation, close together (often above 0.9). Similarity alone would serve one's answer to
the other; these checks reject such pairs cheaply, after the similarity test.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from rag.text import STOPWORDS, stem

# Words, and operators standing on their own ("is" vs "==" questions); "built-in" is two words.
_TOKEN = re.compile(r"[a-z0-9_]+(?:'[a-z]+)?|(?<!\w)[=!<>+\-*/%&|^~@]+(?!\w)")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


NEGATIONS = _words("not no never none nothing nobody neither nor without except unless")
NUMBER_WORDS = _words(
    "zero one two three four five six seven eight nine ten eleven twelve twenty hundred thousand million "
    "first second third fourth fifth last once twice"
)
# Words that frame a question without changing what it asks ("What is the purpose of X?",
# "How does X work?"): a paraphrase may add or drop them.
FRAME_WORDS = _words(
    "purpose mean means meaning meant work works working use used uses using usage happen happens "
    "describe please exactly actually really basically briefly"
)
_CONTRACTIONS = frozenset(["cannot", "can't", "won't", "shan't"])


@dataclass(frozen=True)
class _Terms:
    negations: tuple[str, ...]
    numbers: frozenset[str]
    content: frozenset[str]


def _terms(text: str) -> _Terms:
    negations: list[str] = []
    numbers: set[str] = set()
    content: set[str] = set()
    text = unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")
    for token in _TOKEN.findall(text):
        if token in _CONTRACTIONS or token.endswith("n't"):
            negations.append("not")
            continue
        token = token.removesuffix("'s")
        if token in NEGATIONS:
            negations.append(token if token != "nor" else "neither")
        elif any(ch.isdigit() for ch in token) or token in NUMBER_WORDS:
            numbers.add(token)
        elif token not in STOPWORDS and token not in FRAME_WORDS:
            content.add(stem(token))
    return _Terms(tuple(sorted(negations)), frozenset(numbers), frozenset(content))


def _same_word(a: str, b: str) -> bool:
    # Stems are crude: "defin" (define) and "definition" count as one word when one is a prefix
    # of the other and long enough not to be a different word.
    return a == b or (min(len(a), len(b)) >= 4 and (a.startswith(b) or b.startswith(a)))


def near_miss_reason(question: str, cached: str) -> str | None:
    """Why two similar questions must not share an answer, or None when they may."""
    a, b = _terms(question), _terms(cached)
    if a.negations != b.negations:
        return "negation differs"
    if a.numbers != b.numbers:
        return "numbers differ"
    for one, other in ((a.content, b.content), (b.content, a.content)):
        unmatched = [w for w in one if not any(_same_word(w, o) for o in other)]
        if unmatched:
            return f"word {sorted(unmatched)[0]!r} not in the other question"
    return None
