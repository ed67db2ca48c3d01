"""A document's structure: its text cut at headings, each part with its heading path.

Headings come from Markdown (``# Title`` to ``###### Title``, outside code fences), from
reStructuredText's underlined (and overlined) titles, the style the demo corpus uses (``****``,
``====``, ``----``), from HTML's h1-h6 and from a PDF's outline (see rag.readers). Each chunk
carries the path (title > section > subsection) in what is embedded and in the full-text weights,
so a passage deep in a long document still says what it is about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag.text import fold_spaces

SEPARATOR = " \u203a "

_ATX = re.compile(r"^(#{1,6})(?:[ \t]+(.*))?$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
RULE = re.compile(r"^([=\-*~^\"'`#+_.:])\1{2,}\s*$")


def _atx(line: str) -> tuple[int, str] | None:
    """(level, title) of a Markdown heading line (`## Title ##`), else None. The closing #s are
    dropped only after a space: `# Using C#` is about C#. (Parsed by hand: a regular expression
    for the closing sequence backtracks on a long line of spaces.)"""
    match = _ATX.match(line)
    if not match:
        return None
    title = (match.group(2) or "").strip()
    bare = title.rstrip("#")
    if bare != title and (not bare or bare[-1] in " \t"):
        title = bare.rstrip()
    return (len(match.group(1)), title) if title else None


class _Fences:
    """Whether a line is inside a fenced code block: a fence of ``` or ~~~ is closed only by a
    line of the same character, at least as long, with nothing after it (CommonMark)."""

    def __init__(self) -> None:
        self.open: str | None = None

    def inside(self, line: str) -> bool:
        """Feed ``line``; True when it is part of a fence (its opening and closing lines too)."""
        match = _FENCE.match(line)
        if self.open is None:
            if match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
                self.open = match.group(1)
                return True
            return False
        fence = match.group(1) if match else ""
        if fence and fence[0] == self.open[0] and len(fence) >= len(self.open) and not match.group(2).strip():
            self.open = None
        return True


@dataclass(frozen=True)
class Section:
    path: tuple[str, ...]  # the headings above this text, outermost first
    text: str


class Outline:
    """Heading levels as they appear: reST ranks underline styles in order of first use."""

    def __init__(self) -> None:
        self.styles: list[tuple[str, bool]] = []
        self.path: list[str] = []

    def enter(self, title: str, level: int) -> tuple[str, ...]:
        del self.path[level - 1 :]
        self.path.extend([""] * (level - 1 - len(self.path)))
        self.path.append(fold_spaces(title))
        return tuple(p for p in self.path if p)

    def rst_level(self, char: str, overlined: bool) -> int:
        style = (char, overlined)
        if style not in self.styles:
            self.styles.append(style)
        return self.styles.index(style) + 1


def _underlines(title: str, rule: str) -> bool:
    title = title.strip()
    return bool(title) and not title.startswith(("   ", "\t")) and len(rule.strip()) >= max(3, len(title) - 2)


def split_sections(text: str) -> list[Section]:
    """The text cut at its Markdown and reStructuredText headings (heading lines removed)."""
    lines = text.split("\n")
    outline = Outline()
    sections: list[Section] = []
    path: tuple[str, ...] = ()
    body: list[str] = []
    fences = _Fences()

    def close() -> None:
        content = "\n".join(body).strip()
        if content:
            sections.append(Section(path, content))
        body.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        if not fences.inside(line):
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            after = lines[i + 2] if i + 2 < len(lines) else ""
            over = RULE.match(line)
            if over and RULE.match(after) and after.strip() == line.strip() and _underlines(nxt, line):
                close()
                path = outline.enter(nxt.strip(), outline.rst_level(line.strip()[0], True))
                i += 3
                continue
            under = RULE.match(nxt)
            if under and line.strip() and not RULE.match(line) and _underlines(line, nxt):
                close()
                path = outline.enter(line.strip(), outline.rst_level(nxt.strip()[0], False))
                i += 2
                continue
            atx = _atx(line)
            if atx:
                close()
                path = outline.enter(atx[1], atx[0])
                i += 1
                continue
        body.append(line)
        i += 1
    close()
    return sections


def markdown_title(text: str) -> str:
    """The first level-1 Markdown heading of ``text`` outside code, else its first line outside
    code that is not a rule, else ""."""
    fences = _Fences()
    first = ""
    for line in text.split("\n"):
        if fences.inside(line) or not line.strip() or RULE.match(line):
            continue
        atx = _atx(line)
        if atx and atx[0] == 1:
            return atx[1]
        first = first or (atx[1] if atx else line.strip())
    return first


def heading_path(title: str, path: tuple[str, ...]) -> str:
    """The document's title and the section's headings, without repeating the title."""
    parts = [title.strip()] if title.strip() else []
    for heading in path:
        if not parts or heading.casefold() != parts[-1].casefold():
            parts.append(heading)
    return SEPARATOR.join(parts)
