"""Turn files into plain text: .txt, .md, .html/.htm (visible text only) and .pdf.

What one file may cost is bounded (``RAGSITE_INGEST_MAX_PAGES``, ``_MAX_CHARS``, ``_MAX_SECONDS``):
a few kilobytes of compressed PDF can hold megabytes of page content, so a PDF is refused as soon
as it goes past a limit, not after it has been read.
"""

from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from rag.sections import Outline, Section, split_sections

MEDIA_TYPES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
}


class ReadError(Exception):
    """A file that cannot be ingested; the message says why."""


@dataclass(frozen=True)
class ReadLimits:
    """The most one file may cost to read; beyond any of them it is refused (ReadError)."""

    max_pages: int
    max_chars: int
    max_seconds: float

    @classmethod
    def from_settings(cls) -> ReadLimits:
        return cls(
            max_pages=settings.RAGSITE_INGEST_MAX_PAGES,
            max_chars=settings.RAGSITE_INGEST_MAX_CHARS,
            max_seconds=settings.RAGSITE_INGEST_MAX_SECONDS,
        )

    def check_chars(self, count: int) -> None:
        if count > self.max_chars:
            raise ReadError(f"too much text: more than {self.max_chars:,} characters")


@dataclass(frozen=True)
class ParsedText:
    title: str
    text: str
    media_type: str
    sections: list[Section] = field(default_factory=list)  # the text cut at its headings


def media_type_for(path: Path | str) -> str:
    """The media type of a file name or path by its suffix; ReadError for one we cannot read."""
    suffix = Path(path).suffix.lower()
    media_type = MEDIA_TYPES.get(suffix)
    if media_type is None:
        raise ReadError(f"unsupported file type {suffix or '(none)'!r}; use one of {sorted(MEDIA_TYPES)}")
    return media_type


def parse_bytes(data: bytes, media_type: str, *, fallback_title: str, limits: ReadLimits | None = None) -> ParsedText:
    """Extract the text and a title from a file's bytes, within ``limits`` (default: the settings)."""
    limits = limits or ReadLimits.from_settings()
    if not data.strip():
        raise ReadError("file is empty")
    sections: list[Section] | None = None
    if media_type == "application/pdf":
        title, text, sections = _pdf(data, limits)
    else:
        try:
            decoded = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ReadError(f"not valid UTF-8 text (byte {exc.start})") from None
        if "\x00" in decoded:
            raise ReadError("contains NUL bytes: not a text file")
        if media_type == "text/html":
            title, text, sections = _html(decoded)
        elif media_type == "text/markdown":
            title, text = _markdown_title(decoded), decoded
        else:
            title, text = _first_line(decoded), decoded
    limits.check_chars(len(text))
    text = normalise_text(text)
    if not text:
        raise ReadError("no text found")
    if sections is None:
        sections = [Section((), text)] if media_type == "application/pdf" else split_sections(text)
    else:
        sections = [Section(s.path, normalise_text(s.text)) for s in sections if normalise_text(s.text)]
    return ParsedText(title=(title or fallback_title)[:500], text=text, media_type=media_type, sections=sections)


def normalise_text(text: str) -> str:
    """Unify newlines, drop control characters and runs of blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:200]
    return ""


def _markdown_title(text: str) -> str:
    match = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else _first_line(text).lstrip("#").strip()


# Elements that start a block of their own; text anywhere else (a <span>, a <code>, the bare text
# of a <div>) runs on inside the block around it. Every visible text is kept, inside a block or
# not: a <dt> naming what its <dd> defines, the text of a <div> beside a <p>.
_HTML_BLOCKS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "caption",
        "dd",
        "details",
        "dialog",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "header",
        "hgroup",
        "hr",
        "legend",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
    ]
)
_HTML_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_HTML_HIDDEN = ["script", "style", "noscript", "template", "svg", "iframe", "object", "embed"]


def _html(markup: str) -> tuple[str, str, list[Section]]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(_HTML_HIDDEN):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if soup.head:
        soup.head.decompose()
    for tag in soup("title"):  # a <title> outside <head>
        tag.decompose()
    heading = soup.find(["h1", "h2"])
    if not title and heading:
        title = heading.get_text(" ", strip=True)
    outline = Outline()
    sections: list[Section] = []
    path: tuple[str, ...] = ()
    current: list[str] = []
    blocks: list[str] = []
    for level, text in _html_blocks(soup):
        blocks.append(text)
        if level:
            if current:
                sections.append(Section(path, "\n\n".join(current)))
            current = []
            path = outline.enter(text, level)
        else:
            current.append(text)
    if current:
        sections.append(Section(path, "\n\n".join(current)))
    return title, "\n\n".join(blocks), sections


def _html_blocks(root) -> list[tuple[int, str]]:
    """The visible text of ``root`` in document order, a block at a time: (heading level, text),
    level 0 for a block that is not a heading. Inline text is joined as written ("<b>a</b>b" is
    "ab"), runs of white space are one space, a <br> is a line break, a <pre> keeps its lines.
    The tree is walked without recursion: nesting as deep as a page cares to go costs no stack."""
    from bs4.element import CData, NavigableString, Tag

    blocks: list[tuple[int, str]] = []
    run: list[str] = []
    end_of_block = object()

    def flush() -> None:
        text = re.sub(r" *\n *", "\n", "".join(run)).strip()
        run.clear()
        if text:
            blocks.append((0, text))

    stack: list = list(reversed(root.contents))
    while stack:
        node = stack.pop()
        if node is end_of_block:
            flush()
        elif isinstance(node, NavigableString):
            if type(node) in (NavigableString, CData):  # not a comment, doctype or declaration
                run.append(re.sub(r"\s+", " ", str(node)))
        elif not isinstance(node, Tag):
            continue
        elif node.name in _HTML_HEADINGS:
            flush()
            text = " ".join(node.get_text(" ", strip=True).split()).removesuffix(" \u00b6")  # a permalink's ¶
            if text:
                blocks.append((_HTML_HEADINGS[node.name], text))
        elif node.name == "pre":
            flush()
            text = node.get_text().strip("\n")
            if text.strip():
                blocks.append((0, text))
        elif node.name == "br":
            run.append("\n")
        else:
            if node.name in _HTML_BLOCKS:
                flush()
                stack.append(end_of_block)
            stack.extend(reversed(node.contents))
    flush()
    return blocks


class _PdfBudget:
    """Stops a PDF's text extraction as soon as it has taken too long or yielded too much text.

    pypdf calls ``before_operator`` for every operator of a page's content stream and ``on_text``
    for the text it flushes, so a page whose single content stream holds megabytes of drawing
    operators is stopped in the middle, not after it has been read.
    """

    def __init__(self, limits: ReadLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.max_seconds
        self.chars = 0  # text extracted from the pages done, plus what the current one flushed

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise ReadError(f"PDF takes too long to read: more than {self.limits.max_seconds:g} s")

    def before_operator(self, *_: object) -> None:
        self.check_time()

    def on_text(self, text: str, *_: object) -> None:
        self.chars += len(text)
        self.limits.check_chars(self.chars)


def _pdf(data: bytes, limits: ReadLimits) -> tuple[str, str, list[Section] | None]:
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError, PyPdfError

    budget = _PdfBudget(limits)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise ReadError("PDF is encrypted")
        if len(reader.pages) > limits.max_pages:
            raise ReadError(f"PDF has {len(reader.pages):,} pages; the limit is {limits.max_pages:,}")
        pages = []
        done = 0
        for page in reader.pages:
            budget.check_time()
            text = page.extract_text(visitor_operand_before=budget.before_operator, visitor_text=budget.on_text) or ""
            pages.append(text)
            done += len(text) + 2
            limits.check_chars(done)
            budget.chars = done
        title = (reader.metadata.title if reader.metadata else None) or ""
    except ReadError:
        raise
    except LimitReachedError as exc:
        # pypdf's own bounds: decompressed stream sizes, content stream elements, page tree size.
        raise ReadError(f"PDF goes past a safety limit: {exc}") from None
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise ReadError(f"corrupt PDF: {exc}") from None
    text = "\n\n".join(pages)
    return str(title).strip() or _first_line(text), text, _pdf_sections(reader, pages)


def _outline(reader, items, level: int = 1) -> list[tuple[int, int, str]]:
    """(page index, level, title) of the PDF's bookmarks, in reading order."""
    entries: list[tuple[int, int, str]] = []
    for item in items:
        if isinstance(item, list):
            entries.extend(_outline(reader, item, level + 1))
            continue
        page = reader.get_destination_page_number(item)
        title = str(getattr(item, "title", "") or "").strip()
        if page is not None and page >= 0 and title:
            entries.append((page, level, title))
    return entries


def _pdf_sections(reader, pages: list[str]) -> list[Section] | None:
    """Pages cut where the outline's headings begin (at the heading's text when the page holds
    it, else at the page's start); None when the PDF has no outline."""
    try:
        entries = sorted(_outline(reader, reader.outline), key=lambda e: e[0])
    except Exception:  # a broken outline is no reason to refuse the text
        return None
    if not entries:
        return None
    outline = Outline()
    sections: list[Section] = []
    path: tuple[str, ...] = ()
    for index, page in enumerate(pages):
        position = 0
        for _, level, title in (e for e in entries if e[0] == index):
            found = page.find(title, position)
            start = found if found >= 0 else position
            if page[position:start].strip():
                sections.append(Section(path, page[position:start]))
            path = outline.enter(title, level)
            position = start + len(title) if found >= 0 else start
        if page[position:].strip():
            sections.append(Section(path, page[position:]))
    return sections
