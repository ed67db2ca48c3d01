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

from rag import encodings
from rag.html_text import html_text
from rag.sections import RULE, Outline, Section, markdown_title, split_sections
from rag.text import CONTROL_CHARACTERS

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
        decoded = decode_text(data, html=media_type == "text/html")
        if "\x00" in decoded:
            raise ReadError("contains NUL bytes: not a text file")
        if media_type == "text/html":
            title, text, sections = html_text(decoded)
        elif media_type == "text/markdown":
            title, text = _markdown(decoded)
        else:
            title, text = _first_line(decoded), decoded
    limits.check_chars(len(text))
    text = normalise_text(text)
    if not text:
        raise ReadError("no text found")
    if sections is None:
        sections = [Section((), text)] if media_type == "application/pdf" else split_sections(text)
    else:
        sections = [Section(s.path, t) for s in sections if (t := normalise_text(s.text))]
    title = clean_title(title) or fallback_title
    return ParsedText(title=title[:500], text=text, media_type=media_type, sections=sections)


def decode_text(data: bytes, *, html: bool = False) -> str:
    """A text file's characters (rag.encodings: UTF-8, UTF-16/32 with a byte-order mark, an HTML
    page's declared charset, Western Windows-1252); ReadError when they are in none of those."""
    try:
        return encodings.decode(data, html=html)
    except encodings.UnknownEncoding as exc:
        raise ReadError(str(exc)) from None


# Control characters, and the characters that override or embed a direction of writing (U+202A-E,
# U+2066-9): "invoice \u202eFDP.exe" shows as "invoice exe.PDF", and an unclosed one reverses
# everything after it on the page. Right-to-left text needs none of them.
_UNSEEN = re.compile(f"[{CONTROL_CHARACTERS}\u202a-\u202e\u2066-\u2069]")


def clean_line(text: str) -> str:
    """A title or a name without control or direction-override characters."""
    return _UNSEEN.sub("", text)


def clean_title(text: str) -> str:
    """A title: ``clean_line``'s, its words one space apart."""
    return " ".join(clean_line(text).split())


def normalise_text(text: str) -> str:
    """Unify newlines, drop control and direction-override characters, trailing blanks and runs
    of blank lines (line by line: a run of spaces costs its length, not its square)."""
    text = _UNSEEN.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = "\n".join(line.rstrip(" \t") for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _first_line(text: str) -> str:
    """The first line that is not blank or a rule (`=====`)."""
    for line in text.splitlines():
        if line.strip() and not RULE.match(line):
            return line.strip()[:200]
    return ""


_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)


def _markdown(text: str) -> tuple[str, str]:
    """(title, text) of a Markdown file: the front matter's `title:`, else its first level-1
    heading outside code, else its first line outside code; a front matter (YAML between `---`
    lines at the top) is not text."""
    title = ""
    front = _FRONT_MATTER.match(text)
    if front and re.search(r"^[A-Za-z_][\w-]*:", front.group(1), flags=re.MULTILINE):  # not a --- rule
        text = text[front.end() :]
        found = re.search(r"^title:[ \t]*(.+?)[ \t]*$", front.group(1), flags=re.MULTILINE)
        title = found.group(1).strip("\"'") if found else ""
        title = "" if title in (">", "|", ">-", "|-") else title  # a folded block: not read here
    return title or markdown_title(text), text


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
        if reader.is_encrypted and not _opens_without_password(reader):
            raise ReadError("PDF is encrypted")
        if len(reader.pages) > limits.max_pages:
            raise ReadError(f"PDF has {len(reader.pages):,} pages; the limit is {limits.max_pages:,}")
        pages = []
        done = 0
        for page in reader.pages:
            budget.check_time()
            text = page.extract_text(visitor_operand_before=budget.before_operator, visitor_text=budget.on_text) or ""
            pages.append(_pdf_paragraphs(text))
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
    except Exception as exc:
        # A damaged file reaches pypdf's asserts and unfinished paths (NotImplementedError for an
        # unknown filter, AssertionError for a reference in a content stream, RecursionError...):
        # the file fails alone, the others are read.
        raise ReadError(f"corrupt PDF: {type(exc).__name__}: {exc}"[:300]) from None
    text = join_pages(pages)
    return str(title).strip() or _first_line(text), text, _pdf_sections(reader, pages, budget)


def _opens_without_password(reader) -> bool:
    """An encrypted PDF whose user password is empty (only an owner password restricts printing
    or copying): any viewer opens it, and so do we."""
    try:
        return bool(reader.decrypt(""))
    except Exception:  # an unsupported cipher (AES without `cryptography`) or a broken one
        return False


# A PDF's text comes a line at a time, seldom with a blank line between paragraphs: a heading
# ran into the sentence after it ("Boiler manual 1 Safety Never open the boiler..."), one long
# sentence to the extractive answer. A line well short of the page's full lines (under 60 % of
# the length most lines reach) that ends without punctuation, followed by one that begins with a
# capital or a figure, ends its paragraph; a sentence wrapped in a narrow column stays whole.
_PDF_SHORT_LINE = 0.6


def _pdf_paragraphs(page: str) -> str:
    lines = page.split("\n")
    lengths = sorted(len(line.strip()) for line in lines if line.strip())
    if len(lengths) < 3:
        return page
    full = lengths[(3 * len(lengths)) // 4]  # what most lines of the page reach
    out = []
    for line, following in zip(lines, [*lines[1:], ""], strict=True):
        out.append(line)
        bare, nxt = line.strip(), following.lstrip()
        short = 0 < len(bare) < _PDF_SHORT_LINE * full and bare[-1] not in ".,;:!?-\u2013\u2014("
        if short and nxt and (nxt[0].isupper() or nxt[0].isdigit()):
            out.append("")
    return "\n".join(out)


def join_pages(pages: list[str]) -> str:
    """The pages' text as one: a sentence a page break cut (the page ends without a full stop and
    the next starts in lower case) runs on; otherwise a page break is a paragraph break."""
    text = ""
    for page in pages:
        page = page.strip("\n")
        if not page.strip():
            continue
        if text and text.rstrip()[-1:] not in ".!?:;\"')]" and page.lstrip()[:1].islower():
            text = f"{text.rstrip()} {page.lstrip()}"
        else:
            text = f"{text}\n\n{page}" if text else page
    return text


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


def _pdf_sections(reader, pages: list[str], budget: _PdfBudget | None = None) -> list[Section] | None:
    """Pages cut where the outline's headings begin (at the heading's text when the page holds
    it, else at the page's start); None when the PDF has no outline."""
    try:
        entries = sorted(_outline(reader, reader.outline), key=lambda e: e[0])
    except Exception:  # a broken outline is no reason to refuse the text
        return None
    if not entries:
        return None
    outline = Outline()
    parts: list[tuple[tuple[str, ...], list[str]]] = []  # (path, its pages' pieces)
    path: tuple[str, ...] = ()

    def add(text: str) -> None:
        if not text.strip():
            return
        if parts and parts[-1][0] == path:
            parts[-1][1].append(text)  # a section that runs on over a page break
        else:
            parts.append((path, [text]))

    on_page: dict[int, list[tuple[int, str]]] = {}
    for index, level, title in entries:
        on_page.setdefault(index, []).append((level, title))
    for index, page in enumerate(pages):
        position = 0
        for level, title in on_page.get(index, []):
            if budget is not None:
                budget.check_time()
            start, end = _heading_at(page, title, position)
            add(page[position:start])
            path = outline.enter(title, level)
            position = end
        add(page[position:])
    return [Section(p, join_pages(pieces)) for p, pieces in parts]


def _heading_at(page: str, title: str, position: int) -> tuple[int, int]:
    """Where the bookmark ``title`` stands on ``page`` from ``position``: (start, end) of the
    heading, found as a line of its own first (after a number such as "2." or "3.1", in any case),
    then as the same words in the same case anywhere, whole words only; (position, position) when
    the page does not hold it."""
    words = r"\s+".join(re.escape(word) for word in title.split())
    if not words:
        return position, position
    line = re.compile(rf"^[ \t]*(?:\d+(?:\.\d+)*\.?[ \t]+)?{words}[ \t]*$", re.IGNORECASE | re.MULTILINE)
    for pattern in (line, re.compile(rf"(?<!\w){words}(?!\w)")):
        found = pattern.search(page, position)
        if found:
            return found.start(), found.end()
    return position, position
