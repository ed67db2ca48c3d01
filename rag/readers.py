"""Turn files into plain text: .txt, .md, .html/.htm (visible text only) and .pdf."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

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
class ParsedText:
    title: str
    text: str
    media_type: str


def media_type_for(path: Path | str) -> str:
    """The media type of a file name or path by its suffix; ReadError for one we cannot read."""
    suffix = Path(path).suffix.lower()
    media_type = MEDIA_TYPES.get(suffix)
    if media_type is None:
        raise ReadError(f"unsupported file type {suffix or '(none)'!r}; use one of {sorted(MEDIA_TYPES)}")
    return media_type


def parse_bytes(data: bytes, media_type: str, *, fallback_title: str) -> ParsedText:
    """Extract the text and a title from a file's bytes."""
    if not data.strip():
        raise ReadError("file is empty")
    if media_type == "application/pdf":
        title, text = _pdf(data)
    else:
        try:
            decoded = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ReadError(f"not valid UTF-8 text (byte {exc.start})") from None
        if "\x00" in decoded:
            raise ReadError("contains NUL bytes: not a text file")
        if media_type == "text/html":
            title, text = _html(decoded)
        elif media_type == "text/markdown":
            title, text = _markdown_title(decoded), decoded
        else:
            title, text = _first_line(decoded), decoded
    text = normalise_text(text)
    if not text:
        raise ReadError("no text found")
    return ParsedText(title=(title or fallback_title)[:500], text=text, media_type=media_type)


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


def _html(markup: str) -> tuple[str, str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head", "svg", "iframe"]):
        if tag.name == "head":
            continue
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if soup.head:
        soup.head.decompose()
    heading = soup.find(["h1", "h2"])
    if not title and heading:
        title = heading.get_text(" ", strip=True)
    blocks = []
    for element in soup.find_all(["p", "li", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "td", "blockquote"]):
        if element.find(["p", "li", "pre", "td", "blockquote"]):
            continue  # an outer block: its inner blocks are taken on their own
        text = element.get_text(" ", strip=True)
        if text:
            blocks.append(text)
    body = "\n\n".join(blocks) if blocks else soup.get_text("\n", strip=True)
    return title, body


def _pdf(data: bytes) -> tuple[str, str]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise ReadError("PDF is encrypted")
        pages = [page.extract_text() or "" for page in reader.pages]
        title = (reader.metadata.title if reader.metadata else None) or ""
    except ReadError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise ReadError(f"corrupt PDF: {exc}") from None
    text = "\n\n".join(pages)
    return str(title).strip() or _first_line(text), text
