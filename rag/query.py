"""The question as the full-text search sees it: code operators named, small typos corrected.

Postgres's parser drops punctuation, so ``:=``, ``**`` or ``~x`` reach the full-text query as
nothing at all, and a misspelt word ("statment") matches no chunk. The words the documents use
for an operator are added to the question, and a word that no chunk holds is joined by the
collection's closest word (a difflib ratio of at least 0.8 between the two stems), so "asert
statment" also looks for "assert statement". Only the vocabulary of the collections asked (those
the caller may read: rag.visibility) is consulted. The question itself, embedded for the vector
search, is left as asked.
"""

from __future__ import annotations

import difflib
import re
import threading
from dataclasses import dataclass

from django.db import connection

from rag.models import Chunk
from rag.visibility import CollectionSet

# Longest first: "**" before "*", "//" before "/".
OPERATORS = {
    ":=": "assignment expression",
    "**": "power unpacking",
    "//": "floor division",
    "->": "annotation",
    "<<": "shifting",
    ">>": "shifting",
    "!=": "comparison",
    "==": "comparison",
    "<=": "comparison",
    ">=": "comparison",
    "...": "ellipsis",
    "@": "matrix multiplication decorator",
    "~": "bitwise inversion",
    "^": "bitwise xor",
    "|": "bitwise or",
    "&": "bitwise and",
    "%": "modulo formatting",
}
_OPERATOR = re.compile("|".join(re.escape(op) for op in sorted(OPERATORS, key=len, reverse=True)))
_WORD = re.compile(r"[A-Za-z][A-Za-z]{3,}")
CLOSENESS = 0.8


@dataclass(frozen=True)
class Vocabulary:
    """A collection's full-text lexemes with what BM25 needs of them (rag.ranking)."""

    chunks_with: dict[str, int]  # every lexeme -> how many chunks hold it
    chunks: int
    mean_length: float  # distinct lexemes a chunk, on average


_vocabularies: dict[tuple[int, int], Vocabulary] = {}
_lock = threading.Lock()


def vocabulary(collection_id: int, corpus_version: int) -> Vocabulary:
    """Every full-text lexeme of the collection's chunks and their counts, kept per corpus version."""
    key = (collection_id, corpus_version)
    with _lock:
        found = _vocabularies.get(key)
    if found is not None:
        return found
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT word, ndoc FROM ts_stat('SELECT search_vector FROM {Chunk._meta.db_table} WHERE collection_id = "
            f"{int(collection_id)}')"
        )
        counts = {word: int(ndoc) for word, ndoc in cursor.fetchall()}
        cursor.execute(
            f"SELECT count(*), coalesce(avg(length(search_vector)), 0) FROM {Chunk._meta.db_table} "
            "WHERE collection_id = %s",
            [collection_id],
        )
        chunks, mean_length = cursor.fetchone()
    found = Vocabulary(counts, int(chunks), float(mean_length))
    with _lock:
        for stale in [k for k in _vocabularies if k[0] == collection_id]:
            del _vocabularies[stale]
        _vocabularies[key] = found
    return found


# Each word's stem, kept per process: the stemmer never changes, and a question whose words were
# all seen before costs retrieval no round trip of its own (rag.hybrid's statement is the one).
_STEMS_KEPT = 100_000
_stems: dict[str, str] = {}


def _lexemes(words: list[str]) -> list[tuple[str, str]]:
    """(word, its English stem) for the words that have one (stop words have none)."""
    stems = {word: _stems[word] for word in words if word in _stems}
    unknown = [word for word in dict.fromkeys(words) if word not in stems]
    if unknown:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT w, array_to_string(tsvector_to_array(to_tsvector('english', w)), ' ') "
                "FROM unnest(%s::text[]) AS w",
                [unknown],
            )
            found = {word: lexeme if lexeme and " " not in lexeme else "" for word, lexeme in cursor.fetchall()}
        with _lock:
            if len(_stems) + len(found) > _STEMS_KEPT:
                _stems.clear()
            _stems.update(found)
        stems.update(found)
    return [(word, stem) for word in words if (stem := stems.get(word, ""))]


def search_text(collections: CollectionSet, question: str) -> str:
    """The question with operator names and corrections of misspelt words appended."""
    extra = [OPERATORS[op] for op in _OPERATOR.findall(question)]
    scope = zip(collections.ids, collections.versions, strict=True)
    words = [vocabulary(pk, version).chunks_with for pk, version in scope]
    known = words[0] if len(words) == 1 else frozenset().union(*words)
    for _, lexeme in _lexemes(_WORD.findall(question.lower())):
        if lexeme in known:
            continue
        # A typo rarely changes the first letter or the length by more than two: comparing with
        # those words only keeps this well under a millisecond.
        near = [w for w in known if w[:1] == lexeme[:1] and abs(len(w) - len(lexeme)) <= 2]
        close = difflib.get_close_matches(lexeme, near, n=1, cutoff=CLOSENESS)
        if close:
            extra.append(close[0])
    return f"{question} {' '.join(dict.fromkeys(extra))}" if extra else question
