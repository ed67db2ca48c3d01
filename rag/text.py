"""Words of questions and passages: the stop words, the one stemmer, and the cache keys' normal forms."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_WORD = re.compile(r"[a-z0-9_]+")

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "should",
        "so",
        "than",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "about",
        "explain",
        "tell",
    ]
)

_SUFFIXES = ("ations", "ation", "ings", "ing", "edly", "ed", "es", "s", "ly", "e")


def stem(word: str) -> str:
    """A crude suffix stem ("yields" and "yielded" are "yield"); it keeps at least three letters."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> list[str]:
    """The words that carry meaning: lower-cased, without stop words and single letters."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 1]


_SPACE = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s?!.,;:\u2026\u00bf\u00a1]+$")


def fold_spaces(text: str) -> str:
    """The words of a text one space apart: a passage or a sentence the same whatever its line
    breaks (sentences are stored folded; chunks, overlaps and documents quoting each other are not)."""
    return " ".join(text.split())


def normalise_question(text: str) -> str:
    """Case, spacing and trailing punctuation folded: "What is X?" and "what  is x" are one key."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _TRAILING.sub("", _SPACE.sub(" ", text).strip())


def question_hash(text: str) -> str:
    return hashlib.sha256(normalise_question(text).encode("utf-8")).hexdigest()


def text_hash(text: str) -> str:
    """The embedding cache key: only spacing is folded, since a cased model sees case."""
    normalised = _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def invisible(text: str) -> bool:
    """Whether ``text`` shows nothing: only whitespace, format characters (category Cf: direction
    marks, zero-width spaces) and control characters."""
    return all(ch.isspace() or unicodedata.category(ch) in ("Cf", "Cc") for ch in text)


# Control characters (C0 but tab and line ends, and DEL): never text of a document.
CONTROL_CHARACTERS = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f"
