"""Questions the documents do not cover are declined; covered ones get an extractive answer built
from the sentences closest in meaning, cited, in document order."""

from __future__ import annotations

import json
import re

import pytest

from rag import declining
from rag.declining import covers
from rag.embeddings import get_embedder
from rag.ingestion import ingest_items
from rag.results import NOT_COVERED
from rag.retrieval import RetrievedChunk
from rag.sources import SourceItem
from rag.visibility import OPERATOR, resolve

pytestmark = pytest.mark.django_db

COLLECTION = "declining-test"
TEXTS = {
    "boilers": "Boilers\n\nThe boiler room is in the basement, behind the red door. Boilers are serviced every "
    "October by the caretaker. The caretaker also bleeds the radiators in November.",
    "parking": "Parking\n\nStaff parking is behind building B. Visitors park at the front gate near reception.",
}


@pytest.fixture
def corpus(resilience_config):
    items = [SourceItem(f"facility:{key}", text.encode(), "text/plain", key) for key, text in TEXTS.items()]
    assert not ingest_items(items, collection_name=COLLECTION).failures


def ask(client, question: str, **extra) -> dict:
    body = {"question": question, "collection": COLLECTION, "use_cache": False, **extra}
    response = client.post("/api/query", json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


def test_a_question_the_documents_cannot_answer_is_declined_with_the_closest_sources(client, corpus):
    body = ask(client, "Who won the 2018 FIFA World Cup?")
    assert body["answerable"] is False
    assert body["answer"] == NOT_COVERED and "[1]" not in body["answer"]
    assert body["sources"], "the closest passages are still listed"


def test_a_covered_question_is_answered_from_the_closest_sentences_cited(client, corpus):
    body = ask(client, "When are the boilers serviced?")
    assert body["answerable"] is True
    assert "Boilers are serviced every October by the caretaker. [1]" in body["answer"]
    assert body["sources"][0]["source"] == "facility:boilers"
    assert not body["answer"].startswith("Boilers:"), "a heading is not a signature the sentence defines"
    assert body["answer"].count("[") <= 3
    # Document order: a sentence that comes later in the passage is never cited before an earlier one.
    sentences = [s for s in body["answer"].split(" [1]") if s.strip()]
    positions = [TEXTS["boilers"].find(s.strip()) for s in sentences]
    assert positions == sorted(positions) and -1 not in positions


def test_the_search_page_says_plainly_that_the_documents_do_not_cover_it(client, corpus):
    html = client.get("/", {"q": "How long should I boil an egg for a runny yolk?", "collection": COLLECTION})
    page = html.content.decode()
    assert "Not in the documents" in page
    assert "Closest passages (they do not answer the question)" in page
    assert "[1]" not in page and 'data-answerable="false"' in page


def test_streamed_answers_say_whether_they_are_answerable(client, corpus):
    body = {"question": "Who won the 2018 FIFA World Cup?", "collection": COLLECTION, "stream": True}
    response = client.post("/api/query", json.dumps(body), content_type="application/json")
    events = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert events[0]["type"] == "meta" and events[0]["answerable"] is False
    assert events[-1]["type"] == "done" and events[-1]["answerable"] is False


def test_a_generated_answer_citing_a_passage_that_does_not_exist_is_flagged(
    client, corpus, fake_ollama, resilience_config
):
    resilience_config(provider={"ollama_base_url": fake_ollama.url, "generation_backend": "ollama"})
    fake_ollama.chat_reply = "Every October [1], says the caretaker's log [7]."
    body = ask(client, "When are the boilers serviced?")
    assert body["generator"] == "ollama"
    assert body["invalid_citations"] == [7]
    fake_ollama.chat_reply = "Every October [1]."
    assert ask(client, "When are the boilers serviced?")["invalid_citations"] == []


def test_a_source_far_from_the_question_does_not_decline_what_another_sentence_answers(corpus, monkeypatch):
    # The sources handed to the check are the parking passage; the boiler passage answers the question.
    collections = resolve(OPERATOR, [COLLECTION])
    embedder = get_embedder()
    question = "When are the boilers serviced?"
    vector = embedder.embed([question])[0]
    parking = RetrievedChunk.from_source(
        {"id": 0, "document_id": 0, "title": "parking", "source": "facility:parking", "score": 0.0, "text": ""}
    )
    parking.relevance = 0.1
    judge = dict(collections=collections, question=question, model_name=embedder.name)
    assert covers([parking], **judge, query_vector=vector) is True
    assert covers([parking], **judge) is False  # without the question's vector, the sources alone judge
    monkeypatch.setattr(declining, "NEAREST_SENTENCE_MAX_CHUNKS", 1)  # too many chunks to scan
    assert covers([parking], **judge, query_vector=vector) is False


def test_a_sentence_two_documents_share_is_said_once(client, resilience_config):
    # A handbook quotes the boiler notice word for word: both are sources, the sentence is said once.
    quoted = "Handbook\n\nBoilers are serviced every October by the caretaker. Fire drills are held each spring."
    items = [
        SourceItem("facility:boilers", TEXTS["boilers"].encode(), "text/plain", "boilers"),
        SourceItem("facility:handbook", quoted.encode(), "text/plain", "handbook"),
    ]
    assert not ingest_items(items, collection_name="quoting-test").failures
    body = client.post(
        "/api/query",
        json.dumps({"question": "When are the boilers serviced?", "collection": "quoting-test", "use_cache": False}),
        content_type="application/json",
    ).json()
    assert {s["source"] for s in body["sources"][:2]} == {"facility:boilers", "facility:handbook"}
    assert body["answer"].count("Boilers are serviced every October by the caretaker.") == 1, body["answer"]


REFERENCE_PAGE = (
    "String methods\n\nstr.splitlines(keepends=False)\n\nReturn a list of the lines in the string, breaking "
    "at line boundaries.\n\nstr.casefold()\n\nReturn a casefolded copy of the string, for caseless "
    "matching.\n\nstr.zfill(width)\n\nReturn a copy of the string left filled with zero digits."
)
FOOTNOTED_PAGE = (
    "String methods\n\nstr.isupper()\n\nReturn True if all cased characters [4] in the string are "
    "uppercase and there is at least one cased character.\n\nstr.islower()\n\nReturn True if all cased "
    "characters in the string are lowercase."
)


def ask_of_page(client, page: str, question: str) -> dict:
    """``question`` asked of a collection holding ``page`` alone (a reference page)."""
    items = [SourceItem("ref:page", page.encode(), "text/plain", "String methods")]
    assert not ingest_items(items, collection_name="reference-test").failures
    body = {"question": question, "collection": "reference-test", "use_cache": False}
    return client.post("/api/query", json.dumps(body), content_type="application/json").json()


def test_a_sentence_of_a_reference_page_names_what_it_defines(client, resilience_config):
    # "Return a list of the lines in the string" alone does not say which method does.
    body = ask_of_page(client, REFERENCE_PAGE, "How do I split text into lines?")
    assert body["answerable"] is True
    assert body["answer"].startswith(
        "str.splitlines(keepends=False): Return a list of the lines in the string, breaking at line boundaries. [1]"
    ), body["answer"]


def test_a_documents_footnote_marker_is_not_read_as_a_citation(client, resilience_config):
    body = ask_of_page(client, FOOTNOTED_PAGE, "When is str.isupper true?")
    assert "all cased characters in the string are uppercase" in body["answer"], body["answer"]
    assert "[4]" not in body["answer"]
    assert set(re.findall(r"\[(\d+)\]", body["answer"])) <= {str(n) for n in range(1, len(body["sources"]) + 1)}
