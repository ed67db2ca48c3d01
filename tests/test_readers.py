import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from rag import jobs, tasks
from rag.chunking import answer_sentences
from rag.models import Document, Job, JobStatus
from rag.readers import ReadError, parse_bytes
from tests.test_jobs import FirstAttempt


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


def test_text_in_no_encoding_we_read_is_refused_with_a_reason():
    with pytest.raises(ReadError, match="not valid UTF-8 text \\(byte 3\\)"):
        parse_bytes(b"caf\x81\xe9 au lait", "text/plain", fallback_title="f")  # 0x81: not Windows-1252 either
    with pytest.raises(ReadError, match="UTF-8"):
        parse_bytes(b"caf\xe9\x1b[31m red", "text/plain", fallback_title="f")  # control characters: not text


def test_empty_file_is_refused():
    with pytest.raises(ReadError, match="empty"):
        parse_bytes(b"  \n ", "text/plain", fallback_title="f")


def test_corrupt_pdf_is_refused():
    with pytest.raises(ReadError, match="PDF"):
        parse_bytes(b"%PDF-1.4 this is not really a pdf", "application/pdf", fallback_title="f")


def test_pdf_text_is_extracted(make_pdf):
    parsed = parse_bytes(make_pdf("Quarterly results improved markedly."), "application/pdf", fallback_title="report")
    assert "Quarterly results improved markedly." in parsed.text


# LIMITS: what one file may cost to read

LINE = "The quick brown fox jumps over the lazy dog, again and again."


def refused(data: bytes, media_type: str = "application/pdf") -> tuple[str, float]:
    """The reason a file is refused, and how long it took to refuse it."""
    started = time.perf_counter()
    with pytest.raises(ReadError) as info:
        parse_bytes(data, media_type, fallback_title="f")
    return str(info.value), time.perf_counter() - started


def test_a_pdf_of_too_many_pages_is_refused_before_they_are_read(make_pdf, settings):
    pages = settings.RAGSITE_INGEST_MAX_PAGES + 1
    reason, seconds = refused(make_pdf(LINE, pages=pages))
    assert reason == f"PDF has {pages:,} pages; the limit is {settings.RAGSITE_INGEST_MAX_PAGES:,}"
    assert seconds < 5


@pytest.fixture
def expanding_pdf(make_pdf) -> bytes:
    """10 KB of PDF: three pages drawing one compressed content stream of 2.5 MB, 7 million characters."""
    pdf = make_pdf(LINE, pages=3, repeat=40_000, compress=True)
    assert len(pdf) < 20_000
    return pdf


def test_a_small_pdf_that_expands_to_too_much_text_is_stopped_early(expanding_pdf, settings):
    settings.RAGSITE_INGEST_MAX_CHARS = 100_000
    reason, seconds = refused(expanding_pdf)
    assert reason == "too much text: more than 100,000 characters"
    assert seconds < 10  # stopped in the first page, not after reading all three


def test_a_pdf_that_takes_too_long_is_stopped_at_the_time_limit(expanding_pdf, settings):
    settings.RAGSITE_INGEST_MAX_SECONDS = 1
    reason, seconds = refused(expanding_pdf)
    assert reason == "PDF takes too long to read: more than 1 s"
    assert seconds < 5


def test_a_pdf_stream_that_decompresses_past_pypdfs_bound_is_refused(make_pdf):
    # 80 MB of content in 80 KB: pypdf stops decompressing any stream at 75 MB.
    reason, seconds = refused(make_pdf("x" * 1000, repeat=80_000, compress=True))
    assert reason.startswith("PDF goes past a safety limit")
    assert seconds < 10


def test_a_text_file_of_too_many_characters_is_refused(settings):
    settings.RAGSITE_INGEST_MAX_CHARS = 10_000
    reason, _ = refused(b"word " * 2_001, "text/plain")
    assert reason == "too much text: more than 10,000 characters"


@pytest.mark.django_db
def test_an_uploaded_pdf_past_a_limit_fails_with_the_reason_and_stores_nothing(key_client, expanding_pdf, settings):
    settings.RAGSITE_INGEST_MAX_SECONDS = 1
    upload = SimpleUploadedFile("report.pdf", expanding_pdf, "application/pdf")
    response = key_client.post("/api/documents", {"file": upload, "collection": "reports"})
    assert response.status_code == 202  # read by a worker, not in the web process
    job = Job.objects.get(pk=response.json()["job"]["id"])
    with pytest.raises(jobs.JobFailed, match="PDF takes too long to read"):
        tasks.ingest(FirstAttempt(), job.pk)  # as a worker would run it
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.reason == "PDF takes too long to read: more than 1 s"
    assert not Document.objects.filter(collection__name="reports").exists()


def test_html_headings_make_the_sections_paths():
    html = b"""<html><head><title>Handbook</title></head><body><h1>Handbook</h1><p>Welcome.</p>
    <h2>Leave</h2><p>Ask your manager.</p><h3>Sick leave</h3><p>Call in before nine.</p></body></html>"""
    parsed = parse_bytes(html, "text/html", fallback_title="f")
    assert [(s.path, s.text) for s in parsed.sections] == [
        (("Handbook",), "Welcome."),
        (("Handbook", "Leave"), "Ask your manager."),
        (("Handbook", "Leave", "Sick leave"), "Call in before nine."),
    ]


def test_html_keeps_text_outside_paragraphs_in_document_order():
    # Text a <dt>, a <div> or a <th> holds directly was dropped: a definition list lost what each
    # entry defines, a page written in <div>s beside one <p> lost everything but that <p>.
    html = b"""<html><head><title>Reference</title></head><body><!-- draft -->
    <h1>Reference <a class="headerlink" href="#r">\xc2\xb6</a></h1>
    <dl><dt><code>str.splitlines(keepends=False)</code></dt>
        <dd>Return a list of the lines in the <em>string</em>.</dd></dl>
    <div class="notice">Staff parking is behind building B.<p>Visitors park at the gate.</p>Ask at reception.</div>
    <table><tr><th>Office</th><td>Room 4</td></tr></table>
    <p>First line<br>second line</p>
    <pre>def f():
    return 1</pre></body></html>"""
    parsed = parse_bytes(html, "text/html", fallback_title="f")
    assert parsed.text.split("\n\n") == [
        "Reference",
        "str.splitlines(keepends=False)",
        "Return a list of the lines in the string.",
        "Staff parking is behind building B.",
        "Visitors park at the gate.",
        "Ask at reception.",
        "Office | Room 4",
        "First line\nsecond line",
        "def f():\n    return 1",
    ]
    assert [s.path for s in parsed.sections] == [("Reference",)]


def test_html_nested_deeper_than_the_interpreters_stack_is_read():
    html = b"<div>" * 20000 + b"Deep inside the page." + b"</div>" * 20000
    assert parse_bytes(html, "text/html", fallback_title="f").text == "Deep inside the page."


def _pdf_of_pages(*pages: list[str], outline: list[tuple[str, int]] = (), owner_password: str = "") -> bytes:
    """A PDF of one page per list of lines, with bookmarks (title, page index) and, if given, an
    owner password (the user password empty: it opens without one)."""
    from io import BytesIO

    from pypdf import PdfReader, PdfWriter

    from tests.conftest import build_pdf

    writer = PdfWriter()
    for lines in pages:
        writer.add_page(PdfReader(BytesIO(build_pdf(lines))).pages[0])
    for title, page in outline:
        writer.add_outline_item(title=title, page_number=page)
    if owner_password:
        writer.encrypt(user_password="", owner_password=owner_password, algorithm="RC4-128")
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_damaged_pdf_fails_alone_with_a_reason(make_pdf, tmp_path):
    # An unknown filter made pypdf raise NotImplementedError, which ended the whole ingest run.
    damaged = make_pdf("Boilers are serviced every October.", compress=True).replace(b"/FlateDecode", b"/FlateDecodX")
    with pytest.raises(ReadError, match="corrupt PDF"):
        parse_bytes(damaged, "application/pdf", fallback_title="f")


def test_a_pdf_restricted_only_by_an_owner_password_is_read():
    pdf = _pdf_of_pages(["Boilers are serviced every October."], owner_password="secret")
    assert "Boilers are serviced every October." in parse_bytes(pdf, "application/pdf", fallback_title="f").text


def test_pdf_bookmarks_cut_where_their_heading_line_stands_in_any_case():
    pdf = _pdf_of_pages(
        [
            "1. INTRODUCTION",
            "Safety is our first concern in this manual.",
            "2. SAFETY",
            "Never open the boiler while it is hot.",
        ],
        outline=[("Introduction", 0), ("Safety", 0)],
    )
    parsed = parse_bytes(pdf, "application/pdf", fallback_title="f")
    assert [(s.path, s.text) for s in parsed.sections] == [
        (("Introduction",), "Safety is our first concern in this manual."),
        (("Safety",), "Never open the boiler while it is hot."),
    ]


def test_a_sentence_cut_by_a_page_break_is_one_sentence():
    pdf = _pdf_of_pages(["The boiler must be serviced every year by a"], ["qualified technician. Keep the receipt."])
    parsed = parse_bytes(pdf, "application/pdf", fallback_title="f")
    assert "serviced every year by a qualified technician." in parsed.text
    assert "serviced every year by a qualified technician." in answer_sentences(parsed.sections[0].text)[0]


def test_html_without_a_closing_head_tag_keeps_its_body():
    html = b"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Boiler guide</title>\n<body><h1>Boiler</h1>"
    html += b"<p>The boiler is serviced every year.</p><nav>Home | Contact</nav></body></html>"
    parsed = parse_bytes(html, "text/html", fallback_title="f")
    assert parsed.title == "Boiler guide"
    assert [(s.path, s.text) for s in parsed.sections] == [(("Boiler",), "The boiler is serviced every year.")]


def test_an_html_table_row_stays_together():
    html = (
        b"<h1>Options</h1><table><tr><th>Option</th><th>Default</th></tr><tr><td>timeout</td><td>30 s</td></tr></table>"
    )
    assert parse_bytes(html, "text/html", fallback_title="f").text == "Options\n\nOption | Default\n\ntimeout | 30 s"


@pytest.mark.parametrize(
    ("data", "media_type"),
    [(b"# a" + b" " * 200_000 + b"b\n", "text/markdown"), (b"Title\n\n" + b" " * 2_000_000 + b"x\n", "text/plain")],
)
def test_a_long_run_of_spaces_is_read_in_proportion_to_its_length(data, media_type):
    # The heading pattern backtracked (cubic: 4,000 spaces took 100 s) and so did trailing blanks (quadratic).
    started = time.monotonic()
    parse_bytes(data, media_type, fallback_title="f")
    assert time.monotonic() - started < 5


def test_markdown_headings_titles_and_fences_as_commonmark_reads_them():
    md = (
        b"---\ntitle: Boiler manual\nauthor: facilities\n---\n\n# Using C#\n\nIntro.\n\n"
        b"````\n```\n# not a heading\n```\n````\n\n## Safety ##\n\nBe safe.\n"
    )
    parsed = parse_bytes(md, "text/markdown", fallback_title="f")
    assert parsed.title == "Boiler manual"
    assert "author:" not in parsed.text
    assert [s.path for s in parsed.sections] == [("Using C#",), ("Using C#", "Safety")]
    assert parse_bytes(b"```sh\n# install it\n```\n\nSome text.", "text/markdown", fallback_title="f").title == (
        "Some text."
    )
    assert parse_bytes(b"=====\nManual\n=====\n\nText.", "text/plain", fallback_title="f").title == "Manual"


def test_direction_override_characters_are_not_kept():
    parsed = parse_bytes("Invoice \u202eFDP.exe\u202c is due.".encode(), "text/plain", fallback_title="f")
    assert parsed.text == "Invoice FDP.exe is due." and parsed.title == "Invoice FDP.exe is due."


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        ("\ufeffCafé opening hours: eight to six.".encode("utf-16-le"), "text/plain"),  # Notepad's "Unicode"
        ("Café opening hours: eight to six.".encode("utf-16"), "text/markdown"),
        ("Café opening hours: eight to six.".encode("cp1252"), "text/plain"),  # Windows "ANSI"
        (
            '<html><head><meta charset="iso-8859-15"></head><body><p>Café opening hours: eight to six.</p>'.encode(
                "iso-8859-15"
            ),
            "text/html",
        ),
    ],
)
def test_text_in_the_encodings_windows_and_html_pages_use_is_read(data, media_type):
    assert parse_bytes(data, media_type, fallback_title="f").text == "Café opening hours: eight to six."


@pytest.mark.parametrize(
    ("lines", "sentences"),
    [
        (  # a heading ran into the sentence after it
            [
                "Boiler manual",
                "1 Safety",
                "Never open the boiler while it is hot. The boiler must be serviced every year by a",
                "technician who holds a gas safety certificate.",
            ],
            [
                "Never open the boiler while it is hot.",
                "The boiler must be serviced every year by a technician who holds a gas safety certificate.",
            ],
        ),
        (  # a narrow column's short lines are wrapped sentences, not headings
            ["The boiler pressure must never exceed", "3 bar. Contact the service desk at", "Siemens Ltd for repairs."],
            ["The boiler pressure must never exceed 3 bar.", "Contact the service desk at Siemens Ltd for repairs."],
        ),
    ],
)
def test_a_pdf_line_ends_its_paragraph_only_when_it_is_a_heading(lines, sentences):
    parsed = parse_bytes(_pdf_of_pages(lines), "application/pdf", fallback_title="f")
    assert answer_sentences(parsed.text) == sentences


def test_an_unclosed_html_heading_keeps_the_paragraphs_it_swallowed():
    html = b"<p>Intro.</p><h2>Setup<p>Never open the boiler while it is hot.</p><p>Call an engineer.</p>"
    parsed = parse_bytes(html, "text/html", fallback_title="f")
    assert [(s.path, s.text) for s in parsed.sections] == [
        ((), "Intro."),
        (("Setup",), "Never open the boiler while it is hot.\n\nCall an engineer."),
    ]


def test_an_icons_title_is_not_the_pages():
    html = b"<svg><title>Search icon</title></svg><h1>Boiler guide</h1><p>Service it every year.</p>"
    assert parse_bytes(html, "text/html", fallback_title="f").title == "Boiler guide"


def test_a_table_row_of_many_cells_is_read_in_proportion_to_its_size():
    started = time.monotonic()
    parsed = parse_bytes(b"<table><tr>" + b"<td>cell</td>" * 60_000 + b"</tr></table>", "text/html", fallback_title="f")
    assert parsed.text.count("cell") == 60_000
    assert time.monotonic() - started < 10  # 20 s before: each cell joined the row so far


@pytest.mark.parametrize(
    ("data", "html", "expected"),
    [
        ("Überprüfung … café".encode() + b"\xff", False, "Überprüfung … café\ufffd"),  # UTF-8, one stray byte
        (
            b'<meta name="keywords" content="encoding, charset=utf-16"><meta charset="iso-8859-1"><p>caf\xe9</p>',
            True,
            "café",
        ),
        (b'<meta charset="unicode_escape"><p>C:\\new caf\xe9</p>', True, "C:\\new café"),  # no page's encoding
        (b'<meta charset="undefined"><p>caf\xe9</p>', True, "café"),
    ],
)
def test_an_encoding_is_taken_only_where_it_reads_right(data, html, expected):
    media_type = "text/html" if html else "text/plain"
    assert parse_bytes(data, media_type, fallback_title="f").text == expected


@pytest.mark.parametrize(
    "data",
    ["Привет, мир. Котёл обслуживается каждый год.".encode("cp1251"), "Zażółć gęślą jaźń.".encode("iso-8859-2")],
)
def test_text_that_windows_1252_would_garble_is_refused(data):
    # It was stored as "Ïðèâåò, ìèð." before: refused now, with the reason.
    with pytest.raises(ReadError, match="nor Windows-1252"):
        parse_bytes(data, "text/plain", fallback_title="f")


def test_a_bookmark_word_in_prose_is_no_heading():
    pdf = _pdf_of_pages(
        ["Introduction", "For your safety, never open the boiler while it is hot.", "Because of the heat, use gloves."],
        outline=[("Introduction", 0), ("Use", 0)],
    )
    parsed = parse_bytes(pdf, "application/pdf", fallback_title="f")
    # Neither "safety" in a sentence nor the "use" in "Because" was cut out as a heading.
    sentences = [sentence for section in parsed.sections for sentence in answer_sentences(section.text)]
    assert sentences == ["For your safety, never open the boiler while it is hot.", "Because of the heat, use gloves."]


def test_a_leading_markdown_rule_is_not_a_front_matter():
    md = b"---\n\nThe boiler must be serviced every October by an engineer.\n\n---\n\n## Contacts\n\nCall reception.\n"
    parsed = parse_bytes(md, "text/markdown", fallback_title="f")
    assert "The boiler must be serviced every October by an engineer." in parsed.text
