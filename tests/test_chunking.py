from itertools import pairwise

import pytest

from rag.chunking import answer_sentences, chunk_sections, chunk_text, sentence_leads, split_sentences
from rag.sections import split_sections


def test_short_text_is_one_chunk():
    assert chunk_text("One paragraph. Two sentences.") == ["One paragraph. Two sentences."]


def test_chunks_respect_the_size_limit():
    text = "\n\n".join(f"Paragraph {i} has a few words in it. It ends here." for i in range(60))
    chunks = chunk_text(text, size=300, overlap=60)
    assert len(chunks) > 5
    assert all(len(chunk) <= 300 for chunk in chunks)


def test_each_chunk_starts_with_the_last_sentences_of_the_previous_one():
    text = "\n\n".join(f"Sentence number {i} is here. Another one follows {i}." for i in range(40))
    chunks = chunk_text(text, size=200, overlap=60)
    for previous, current in pairwise(chunks):
        last_sentence = split_sentences(previous)[-1]
        carried = current.split("\n\n")[0]
        assert carried.endswith(last_sentence)
        assert len(carried) <= 60


def test_a_long_paragraph_is_split_at_sentences_then_words():
    sentence = "word " * 400  # one 2000-character sentence with no full stop
    chunks = chunk_text("Intro sentence here. " + sentence, size=500, overlap=0)
    assert all(len(chunk) <= 500 for chunk in chunks)
    assert "".join(chunks).replace(" ", "").replace("\n", "") == ("Intro sentence here. " + sentence).replace(" ", "")


def test_nothing_is_lost_without_overlap():
    paragraphs = [f"Fact {i}: the value is {i * 7}." for i in range(100)]
    chunks = chunk_text("\n\n".join(paragraphs), size=250, overlap=0)
    joined = "\n\n".join(chunks)
    assert all(p in joined for p in paragraphs)


def test_blank_text_gives_no_chunks():
    assert chunk_text("   \n\n  ") == []


def test_each_chunk_carries_its_heading_path_from_rest_and_markdown_headings():
    rest = (
        "Compound statements\n*******************\n\nIntro text.\n\n"
        'The "for" statement\n===================\n\nLoops over items.\n\n'
        "Details\n-------\n\nMore about loops.\n\n"
        'The "while" statement\n=====================\n\nLoops while true.\n'
    )
    chunks = chunk_sections(split_sections(rest), title="Compound statements")
    assert chunks == [
        ("Compound statements", "Intro text."),
        ('Compound statements \u203a The "for" statement', "Loops over items."),
        ('Compound statements \u203a The "for" statement \u203a Details', "More about loops."),
        ('Compound statements \u203a The "while" statement', "Loops while true."),
    ]
    markdown = "# Guide\n\nHello.\n\n## Install\n\nRun it.\n\n```\n# not a heading\n```\n\n### Linux\n\nUse apt.\n"
    paths = [heading for heading, _ in chunk_sections(split_sections(markdown), title="Guide")]
    assert paths == ["Guide", "Guide \u203a Install", "Guide \u203a Install \u203a Linux"]


REFERENCE_PAGE = """String methods

str.splitlines(keepends=False)

Return a list of the lines in the string, breaking at line boundaries. Line breaks are not
   included unless *keepends* is given and true.

For example:

   >>> 'ab c\\n\\nde fg'.splitlines()
   ['ab c', '', 'de fg']

Notes on the methods below

Every method returns a new string and leaves the original as it was.

del d[key]

Remove "d[key]" from *d*; raises a "KeyError" if *key* is not in the map.
"""


def test_a_sentence_is_led_by_the_signature_on_the_line_before_its_paragraph():
    leads = sentence_leads(REFERENCE_PAGE)
    assert leads["Return a list of the lines in the string, breaking at line boundaries."] == (
        "str.splitlines(keepends=False)"
    )
    assert leads["Line breaks are not included unless *keepends* is given and true."] == (
        "str.splitlines(keepends=False)"
    )
    assert leads['Remove "d[key]" from *d*; raises a "KeyError" if *key* is not in the map.'] == "del d[key]"
    # A line of words is a heading, not a signature; prose is led by nothing.
    assert "Every method returns a new string and leaves the original as it was." not in leads
    assert len(leads) == 3


@pytest.mark.parametrize(
    "line",
    [
        "3.1 Safety (general)",
        "Chapter 4. Maintenance",
        "**Warning**",
        "_Last updated 2024-03-01_",
        "Contact: ops@example.com",
        "| Name | Value |",
        "Version 2.0 (released March 2024)",
        "<img src=x onerror=alert(1)>",
        "[Reset the badge](https://example.com/badge)",
    ],
)
def test_a_heading_a_note_markup_or_a_link_does_not_lead_the_paragraph_after_it(line):
    text = f"{line}\n\nNever open the boiler while it is still hot."
    assert sentence_leads(text) == {}


def test_a_sentence_said_under_two_signatures_is_led_by_neither():
    text = (
        "keys()\n\nReturn a new view of the keys. See the documentation of view objects.\n\n"
        "items()\n\nReturn a new view of the items. See the documentation of view objects."
    )
    assert sentence_leads(text) == {
        "Return a new view of the keys.": "keys()",
        "Return a new view of the items.": "items()",
    }


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Prices rose by 4.5% to EUR 1,250 in Q3 2023.", ["Prices rose by 4.5% to EUR 1,250 in Q3 2023."]),
        ("Call 0800 123 456 between 9:00 and 17:00.", ["Call 0800 123 456 between 9:00 and 17:00."]),
        (
            "Ask Mr. Jones for the keys. Dr. Smith approved the plan on Monday.",
            ["Ask Mr. Jones for the keys.", "Dr. Smith approved the plan on Monday."],
        ),
        ("Bring a laptop, e.g. The spare one in room four.", ["Bring a laptop, e.g. The spare one in room four."]),
        ("The heating stays on until the end of March…", ["The heating stays on until the end of March…"]),
        (
            "ボイラーは毎年十月に点検されます。鍵は受付にあります。",
            ["ボイラーは毎年十月に点検されます。", "鍵は受付にあります。"],
        ),
    ],
)
def test_sentences_with_figures_titles_and_other_scripts_can_answer(text, sentences):
    # They were dropped (too few letters, split after "Mr.", no spaces between words, a "…").
    assert answer_sentences(text) == sentences
