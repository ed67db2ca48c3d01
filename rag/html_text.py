"""The visible text of an HTML page, a block at a time in page order, cut at its h1-h6."""

from __future__ import annotations

import re

from rag.sections import Outline, Section

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
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "tfoot",
        "thead",
        "tr",
        "ul",
    ]
)
_HTML_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_HTML_CELLS = frozenset(["td", "th"])
_HTML_BLOCK_LIKE = sorted(_HTML_BLOCKS | set(_HTML_HEADINGS) | _HTML_CELLS)
# Not text, or not the page's own: the head's elements stay out however the page nests them
# (without a `</head>`, html.parser puts the whole body inside <head>), and so do menus.
_HTML_HIDDEN = ["script", "style", "noscript", "template", "svg", "iframe", "object", "embed", "title", "meta", "link"]
_HTML_HIDDEN.append("nav")  # a menu


def html_text(markup: str) -> tuple[str, str, list[Section]]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    # The page's <title>, not an icon's (`<svg><title>Search icon</title></svg>`).
    own = next((t for t in soup.find_all("title") if t.find_parent("svg") is None), None)
    title = own.get_text(" ", strip=True) if own else ""
    for tag in soup(_HTML_HIDDEN) + soup(attrs={"role": ["navigation", "search"]}):
        if not tag.decomposed:  # not inside one taken out already
            tag.decompose()
    heading = soup.find(["h1", "h2"])
    if not title and heading:
        title = _heading_text(_heading_and_rest(heading)[0])
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
    said = False  # whether the run holds more than white space (asked per table cell)
    end_of_block = object()

    def flush() -> None:
        nonlocal said
        text = "\n".join(line.strip(" ") for line in "".join(run).split("\n")).strip()
        run.clear()
        said = False
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
                said = said or not node.isspace()
        elif not isinstance(node, Tag):
            continue
        elif node.name in _HTML_HEADINGS:
            flush()
            # An unclosed heading (`<h2>Setup<p>...`) holds the rest of the page: its text is what
            # comes before its first block, and the blocks are read as the page's own.
            words, rest = _heading_and_rest(node)
            if text := _heading_text(words):
                blocks.append((_HTML_HEADINGS[node.name], text))
            stack.extend(reversed(rest))
        elif node.name == "pre":
            flush()
            text = node.get_text().strip("\n")
            if text.strip():
                blocks.append((0, text))
        elif node.name == "br":
            run.append("\n")
        elif node.name in _HTML_CELLS:
            if said:
                run.append(" | ")  # a table's row is one block, its cells apart
            stack.extend(reversed(node.contents))
        else:
            if node.name in _HTML_BLOCKS:
                flush()
                stack.append(end_of_block)
            stack.extend(reversed(node.contents))
    flush()
    return blocks


def _heading_and_rest(heading) -> tuple[str, list]:
    """A heading element's words, and the children from its first block on (none when closed)."""
    from bs4.element import Tag

    children = list(heading.contents)
    for index, child in enumerate(children):
        if isinstance(child, Tag) and (child.name in _HTML_BLOCK_LIKE or child.find(_HTML_BLOCK_LIKE)):
            words = " ".join(c.get_text(" ", strip=True) if isinstance(c, Tag) else str(c) for c in children[:index])
            return " ".join(words.split()), children[index:]
    return heading.get_text(" ", strip=True), []


def _heading_text(text: str) -> str:
    """A heading's words without a permalink's sign before or after them (`# Setup`, `Setup ¶`)."""
    words = text.split()
    while words and words[0] in ("#", "\u00b6", "\u00a7"):
        words.pop(0)
    while words and words[-1] in ("#", "\u00b6", "\u00a7"):
        words.pop()
    return " ".join(words)
