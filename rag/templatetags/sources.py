"""``{% source_snippet source %}``: a source's snippet on the search page, its best sentence marked."""

from __future__ import annotations

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
