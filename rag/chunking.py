"""Split text into overlapping chunks along paragraph and sentence boundaries.

Paragraphs are packed greedily into chunks of at most ``size`` characters; a paragraph longer
than that is split into sentences, and a sentence longer than that at word boundaries. Each new
chunk starts with the last sentences of the previous one (up to ``overlap`` characters), so a
fact that straddles a boundary is still found whole in one chunk.

The defaults (800 characters, 150 overlap) keep a chunk well inside all-MiniLM-L6-v2's 256-token
window (about 1000 characters of English) while holding a full paragraph of context.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import pairwise

from rag.sections import Section, heading_path
from rag.text import fold_spaces

# A sentence ends at . ! ? or … before a capital or a digit, unless the full stop closes a title or
# an abbreviation that a name or an example follows ("Mr. Jones", "Dr. Smith", "e.g. Python"); and
# at the Chinese and Japanese full stops, which no space follows.
_NOT_AN_END = "".join(
    rf"(?<!\b{re.escape(abbreviation)})"
    for abbreviation in ("Mr.", "Mrs.", "Ms.", "Dr.", "Prof.", "St.", "Sr.", "Jr.", "e.g.", "i.e.", "cf.", "vs.")
)
_SENTENCE_END = re.compile(rf"(?<=[.!?\u2026]){_NOT_AN_END}\s+(?=[\"'(\[]?[A-Z0-9])|(?<=[\u3002\uff01\uff1f])")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


_RULE_LINE = re.compile(r"^\s*[-=*~^#_`]{3,}\s*$")


def prose_sentences(text: str) -> list[str]:
    """Sentences of a passage's prose: headings' underlines, grammar rules and code are dropped."""
    return [sentence for paragraph in _PARAGRAPH_BREAK.split(text) for sentence in _paragraph_sentences(paragraph)]


_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def _paragraph_sentences(paragraph: str) -> list[str]:
    lines = [line for line in paragraph.splitlines() if not _RULE_LINE.match(line) and "::=" not in line]
    if not lines or all(line.startswith(("   ", "\t", ">>>")) for line in lines):
        return []  # an indented block: code or grammar
    sentences = []
    for sentence in split_sentences(fold_spaces(" ".join(lines))):
        # Prose: words (or, in Chinese and Japanese, characters), mostly letters and figures
        # ("Prices rose by 4.5% to EUR 1,250 in Q3 2023."), ending as a sentence ends.
        words = len(sentence.split()) >= 4 or len(_CJK.findall(sentence)) >= 8
        letters = sum(ch.isalnum() or ch.isspace() for ch in sentence)
        if words and letters >= 0.75 * len(sentence) and sentence[-1] in _ENDINGS:
            sentences.append(sentence)
    return sentences


_ENDINGS = ".!?\"')\u201d\u2019\u2026\u3002\uff01\uff1f"


# A signature on a line of its own, defined by the paragraph after it, as reference pages write
# them (`str.splitlines(keepends=False)`, `object.__hash__(self)`, `del d[key]`, a debugger's
# `w(here)`): its sentences say "Return a list of the lines in the string" without naming what
# does. A signature is a name called or subscripted (after at most one lower-case keyword), or a
# dotted name; a heading ("3.1 Safety (general)", "Chapter 4. Maintenance"), a note ("**Warning**",
# "Contact: ops@example.com"), markup or a link is not.
LEAD_MAX = 80
_SIGNATURE = re.compile(
    r"`?(?:[a-z]+[ \t]+)?[A-Za-z_][\w.]*(?:\(.*\)|\[.*\])`?(?:[ \t].*)?"  # name(...), name[...], def f(x)
    r"|`?[A-Za-z_]\w*(?:\.\w+)+`?"  # object.__dict__
)
_PLAIN_WORD = re.compile(r"^[A-Za-z]+,?$")


def _lead(paragraph: str) -> str | None:
    """``paragraph`` as the signature it is (without a permalink's pilcrow), or None."""
    line = paragraph.strip().removesuffix("\u00b6").rstrip()
    if not line or "\n" in line or len(line) > LEAD_MAX or line[-1] in ".!?:;,":
        return None
    if not _SIGNATURE.fullmatch(line) or "://" in line or "](" in line:
        return None
    # A signature, not a clause of prose that lost its full stop.
    if sum(1 for word in line.split() if _PLAIN_WORD.match(word)) >= 4 or _paragraph_sentences(line):
        return None
    return fold_spaces(line)


def sentence_leads(text: str) -> dict[str, str]:
    """The signature (a line of its own, just before their paragraph) that each sentence of
    ``text`` defines, for the sentences that follow one. A sentence said under two signatures
    ("See the documentation of view objects." under `keys()` and `items()`) is led by neither."""
    leads: dict[str, str | None] = {}
    for before, paragraph in pairwise(_PARAGRAPH_BREAK.split(text)):
        lead = _lead(before)
        for sentence in _paragraph_sentences(paragraph):
            if sentence in leads and leads[sentence] != lead:
                leads[sentence] = None
            else:
                leads[sentence] = lead
    return {sentence: lead for sentence, lead in leads.items() if lead}


def _split_long(text: str, size: int) -> list[str]:
    """Break a piece longer than ``size`` at sentence, then word boundaries."""
    pieces: list[str] = []
    for sentence in split_sentences(text):
        while len(sentence) > size:
            cut = sentence.rfind(" ", 0, size)
            cut = cut if cut > size // 2 else size
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    return pieces


def _tail(text: str, overlap: int) -> str:
    """The last whole sentences of ``text`` that fit in ``overlap`` characters."""
    if overlap <= 0:
        return ""
    tail: list[str] = []
    length = 0
    for sentence in reversed(split_sentences(text)):
        if length + len(sentence) + 1 > overlap:
            break
        tail.insert(0, sentence)
        length += len(sentence) + 1
    return " ".join(tail)


def chunk_text(text: str, *, size: int = 800, overlap: int = 150) -> list[str]:
    if overlap >= size:
        raise ValueError("overlap must be smaller than size")
    units: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        units.extend([paragraph] if len(paragraph) <= size else _split_long(paragraph, size))

    chunks: list[str] = []
    current = ""
    for unit in units:
        candidate = f"{current}\n\n{unit}" if current else unit
        if len(candidate) <= size:
            current = candidate
            continue
        if current:
            chunks.append(current)
            carry = _tail(current, overlap)
            current = f"{carry}\n\n{unit}" if carry and len(carry) + len(unit) + 2 <= size else unit
        else:
            current = unit
    if current:
        chunks.append(current)
    return chunks


def chunk_sections(
    sections: Sequence[Section], *, title: str, size: int = 800, overlap: int = 150
) -> list[tuple[str, str]]:
    """(heading path, chunk) pairs: each section chunked on its own, so a chunk never mixes two
    sections and its heading path is exact."""
    pieces: list[tuple[str, str]] = []
    for section in sections:
        heading = heading_path(title, section.path)
        pieces.extend((heading, chunk) for chunk in chunk_text(section.text, size=size, overlap=overlap))
    return pieces


def answer_sentences(text: str) -> list[str]:
    """The sentences of a chunk that can stand in an answer: prose of a readable length (a
    character of Chinese or Japanese says about what a word does)."""
    return [s for s in prose_sentences(text) if (8 if _CJK.search(s) else 20) <= len(s) <= 600]
