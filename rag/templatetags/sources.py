"""The search page's pieces of an answer: ``{% source_snippet source %}``, a source's snippet with
its best sentence marked, and ``|citations_warning``, what the page says of citations no source has."""

from __future__ import annotations

from collections.abc import Sequence

from django import template
from django.utils.html import format_html

from rag.highlight import snippet
from rag.retrieval import RetrievedChunk

register = template.Library()


@register.simple_tag
def source_snippet(source: RetrievedChunk) -> str:
    before, marked, after = snippet(source.text, source.highlight)
    if not marked:
        return format_html('<p class="snippet">{}</p>', after)
    return format_html('<p class="snippet">{}<mark>{}</mark>{}</p>', before, marked, after)


@register.filter
def citations_warning(numbers: Sequence[int]) -> str:
    """ "The answer cites [7], which is not one of the sources." (search.js says the same.)"""
    cited = [f"[{n}]" for n in numbers]
    if not cited:
        return ""
    if len(cited) == 1:
        return f"The answer cites {cited[0]}, which is not one of the sources."
    return f"The answer cites {', '.join(cited[:-1])} and {cited[-1]}, which are not among the sources."
