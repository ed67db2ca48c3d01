import pytest

from rag.readers import ReadError, parse_bytes


def test_html_keeps_visible_text_only():
    html = b"""<html><head><title>Guide</title><style>p{color:red}</style></head>
    <body><h1>Guide</h1><script>alert('x')</script><p>Visible paragraph.</p><ul><li>Item one</li></ul></body></html>"""
    parsed = parse_bytes(html, "text/html", fallback_title="f")
    assert parsed.title == "Guide"
    assert "Visible paragraph." in parsed.text
    assert "Item one" in parsed.text
    assert "alert" not in parsed.text
    assert "color" not in parsed.text


def test_markdown_title_comes_from_the_first_heading():
    parsed = parse_bytes(b"Intro line\n\n# Real Title\n\nBody text.", "text/markdown", fallback_title="f")
    assert parsed.title == "Real Title"


def test_invalid_utf8_is_refused_with_a_reason():
    with pytest.raises(ReadError, match="UTF-8"):
        parse_bytes(b"caf\xe9 au lait", "text/plain", fallback_title="f")


def test_empty_file_is_refused():
    with pytest.raises(ReadError, match="empty"):
        parse_bytes(b"  \n ", "text/plain", fallback_title="f")


def test_corrupt_pdf_is_refused():
    with pytest.raises(ReadError, match="PDF"):
        parse_bytes(b"%PDF-1.4 this is not really a pdf", "application/pdf", fallback_title="f")


def test_pdf_text_is_extracted(make_pdf):
    parsed = parse_bytes(make_pdf("Quarterly results improved markedly."), "application/pdf", fallback_title="report")
    assert "Quarterly results improved markedly." in parsed.text
