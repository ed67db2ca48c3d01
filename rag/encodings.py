"""Which encoding a text file is in, from its bytes: what Windows, editors and web pages write.

UTF-8 first (with or without a byte-order mark); UTF-16 or UTF-32 with a byte-order mark (what
Windows Notepad calls "Unicode"); the charset an HTML page declares in a <meta>, when it names a
text encoding web pages use; a file that is UTF-8 but for a stray byte (a file cut short, one
pasted Windows-1252 character) as UTF-8, that byte replaced; else Windows-1252, Western Windows'
"ANSI", but only when the result reads as Western text. A guess that reads wrong ("Ïðèâåò" for
Russian in Windows-1251) is refused rather than stored.
"""

from __future__ import annotations

import codecs
import re

from rag.text import CONTROL_CHARACTERS


class UnknownEncoding(ValueError):
    """The bytes are in no encoding read here; the message says so."""


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16's: it begins with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_META = re.compile(rb"<meta\b([^>]{0,500})>", re.IGNORECASE)
_ATTRIBUTE = re.compile(rb"""([\w:-]+)\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+)""")
_CONTENT_CHARSET = re.compile(rb"charset\s*=\s*[\"']?([\w.:-]{1,40})", re.IGNORECASE)
# The encodings a page may declare (the Encoding Standard's families), by Python's codec name.
_WEB_ENCODINGS = (
    "cp",
    "iso8859",
    "koi8",
    "mac-",
    "gb",
    "big5",
    "euc",
    "shift_jis",
    "iso2022",
    "tis-620",
    "hz",
    "ascii",
    "latin",
)
_UTF8_SEQUENCE = re.compile(rb"[\xc2-\xf4][\x80-\xbf]")
_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")
_FOREIGN_RUN = re.compile(r"[^\W\d_a-zA-Z]{3,}")  # three letters in a row beyond ASCII: "Ïðè"


def decode(data: bytes, *, html: bool = False) -> str:
    """``data`` as text (see the module's docstring); UnknownEncoding when it is in none of those."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeError as exc:
                raise UnknownEncoding(f"not valid {codec.upper()} text ({exc.reason})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        utf8_error = exc.start
    declared = declared_charset(data[:4096]) if html else None
    if declared:
        try:
            return data.decode(declared)
        except UnicodeError:
            pass
    if _UTF8_SEQUENCE.search(data):  # UTF-8 but for a stray byte or a cut character?
        text = data.decode("utf-8", errors="replace")
        wrong = text.count("\ufffd")
        right = sum(not ch.isascii() for ch in text) - wrong
        if wrong <= max(1, right // 20):
            return text
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        text = ""
    if text and _reads_as_western(text):
        return text
    raise UnknownEncoding(
        f"not valid UTF-8 text (byte {utf8_error}), nor UTF-16 with a byte-order mark, nor Windows-1252"
    )


def declared_charset(head: bytes) -> str | None:
    """The text encoding a page's <meta charset> or <meta http-equiv="Content-Type"> names, as
    Python's codec name; None when it names none a page may use (UTF-16 cannot be declared in an
    ASCII <meta>; "unicode_escape" is no page's encoding)."""
    for meta in _META.finditer(head):
        attributes = {name.lower(): value.strip(b"\"'") for name, value in _ATTRIBUTE.findall(meta.group(1))}
        name = attributes.get(b"charset")
        if name is None and attributes.get(b"http-equiv", b"").lower() == b"content-type":
            found = _CONTENT_CHARSET.search(attributes.get(b"content", b""))
            name = found.group(1) if found else None
        if name is None:
            continue
        try:
            codec = codecs.lookup(name.decode("ascii")).name
        except (LookupError, UnicodeError):
            return None
        return codec if codec.startswith(_WEB_ENCODINGS) else None
    return None


def _reads_as_western(text: str) -> bool:
    """Whether Windows-1252's reading of some bytes is Western text: no control characters, letters
    beyond ASCII now and then (é, ü, ñ), never three in a row nor a third of the letters."""
    if _CONTROL.search(text):
        return False
    letters = sum(ch.isalpha() for ch in text)
    beyond = sum(ch.isalpha() and not ch.isascii() for ch in text)
    return beyond * 3 <= letters and not _FOREIGN_RUN.search(text)
