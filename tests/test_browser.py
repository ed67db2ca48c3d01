"""The search page in headless Chromium (Debian's chromium and chromium-driver) against a live server."""

from __future__ import annotations

import html
import re
import shutil
import uuid
from contextlib import contextmanager

import pytest
import requests

from tests.live import live_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver

    chromium = shutil.which("chromium")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.fail("chromium and chromedriver are needed: scripts/system-deps.sh installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def fake_chat(tmp_path_factory):
    from resilience.fake_ollama import FakeOllama

    with FakeOllama(stream_delay=0.05) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(demo_corpus, fake_chat, tmp_path_factory, django_db_blocker):
    from resilience.testing import saved_settings

    with (
        django_db_blocker.unblock(),
        saved_settings(
            provider={"ollama_base_url": fake_chat.url, "generation_backend": "ollama"},
            breaker={"failure_threshold": 100},
            pool={"max_retries": 0},
        ),
        live_server(tmp_path_factory.mktemp("live")) as base,
    ):
        # The worker's first question pays for what each process loads once (a real deployment
        # warms its workers at start); the tests below are about the page, not that first cost.
        requests.post(f"{base}/api/query", json={"question": "What is a class definition?"}, timeout=60)
        yield base


def ask(browser, base: str, question: str, collection: str | None = None, *, prepare: str = ""):
    """Type ``question`` into the page and wait for its answer (``prepare``: a script run first)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(base + "/")
    if prepare:
        browser.execute_script(prepare)
    # Count the page's text updates, to see the answer arrive in pieces.
    browser.execute_script(
        "window.updates = 0; new MutationObserver(function () { window.updates++; })"
        ".observe(document.body, {subtree: true, childList: true, characterData: true});"
    )
    if collection is not None:
        browser.find_element(By.CSS_SELECTOR, f"input[name=collection][value='{collection}']").click()
    box = browser.find_element(By.NAME, "q")
    box.clear()
    box.send_keys(question, Keys.ENTER)
    WebDriverWait(browser, 30).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#answer[data-state=done], #answer[data-state=error]"))
    )
    return browser


def test_typing_a_question_streams_the_answer_and_shows_its_sources(browser, server, fake_chat):
    from selenium.webdriver.common.by import By

    fake_chat.healthy()
    ask(browser, server, "What does the yield statement do?")
    answer = browser.find_element(By.ID, "answer-text").text
    assert answer.startswith("According to [1]"), browser.find_element(By.ID, "answer").get_attribute("outerHTML")
    words = len(answer.split())
    assert browser.execute_script("return window.updates") > words  # one update per streamed piece
    sources = browser.find_elements(By.CSS_SELECTOR, "#sources li")
    assert len(sources) == 5
    assert "pydoc:yield" in sources[0].text
    # "Compound statements" quotes "The for statement": one source names the other document.
    assert any("Also in: " in s.text for s in sources)
    assert "yield" in sources[0].find_element(By.CSS_SELECTOR, ".snippet mark").text.lower()
    assert browser.find_element(By.CSS_SELECTOR, "[data-flag=generator]").text == "ollama"
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-flag=degraded]")
    assert "q=What+does+the+yield" in browser.current_url  # the address can be shared


def test_the_page_works_without_javascript(browser, server, fake_chat):
    from selenium.webdriver.common.by import By

    fake_chat.healthy()
    browser.get(f"{server}/?q=What+is+a+lambda+expression%3F")
    assert "[1]" in browser.find_element(By.ID, "answer-text").text
    assert "pydoc:lambda" in browser.find_element(By.ID, "sources").text


def test_degraded_badge_shows_when_ollama_is_down(browser, server, fake_chat):
    from selenium.webdriver.common.by import By

    fake_chat.set_mode("down")
    try:
        # A question never asked before: a cached answer would rightly be served without Ollama.
        ask(browser, server, f"What is a lambda expression used for in {uuid.uuid4().hex[:8]}?")
        html = browser.find_element(By.ID, "answer").get_attribute("outerHTML")
        assert browser.find_elements(By.CSS_SELECTOR, "[data-flag=degraded]"), html
        badge = browser.find_element(By.CSS_SELECTOR, "[data-flag=degraded]")
        assert badge.is_displayed() and badge.text == "degraded"
        assert "generation unavailable" in browser.find_element(By.CSS_SELECTOR, ".reason").text
        # The extractive answer cites the sources its sentences come from (not always the first).
        assert re.search(r"\[[1-5]\]", browser.find_element(By.ID, "answer-text").text)
    finally:
        fake_chat.healthy()


@pytest.fixture(scope="module")
def api_key_committed(demo_corpus, django_db_blocker) -> str:
    """A key the live server can see: created outside any test transaction."""
    from rag.models import ApiKey

    with django_db_blocker.unblock():
        _, key = ApiKey.issue(name="browser test", all_collections=True, can_write=True)
    return key


def test_a_document_with_a_script_stays_inert(browser, server, api_key_committed):
    from selenium.webdriver.common.by import By

    auth = {"Authorization": f"Bearer {api_key_committed}"}
    payload = {
        "title": "Harbour <script>window.pwnedTitle = 1</script> notice",
        "text": "The harbour crane <script>window.pwned = 1</script><img src=x onerror='window.pwnedImg=1'> "
        "is inspected every spring by the harbour master.",
        "collection": "browser-xss",
    }
    created = requests.post(f"{server}/api/documents", json=payload, headers=auth, timeout=60)
    assert created.status_code == 201, created.text
    try:
        # The streamed page, built by the page's script from the API's JSON...
        ask(browser, server, "harbour crane inspected", collection="browser-xss")
        streamed = browser.find_element(By.ID, "sources").text
        assert "<script>window.pwned = 1</script>" in streamed
        assert browser.execute_script("return [window.pwned, window.pwnedImg, window.pwnedTitle]") == [None, None, None]
        # ...and the server-rendered one.
        browser.get(f"{server}/?q=harbour+crane+inspected&collection=browser-xss")
        page = browser.find_element(By.ID, "sources").text
        assert "<script>window.pwned = 1</script>" in page  # shown as text
        assert browser.execute_script("return [window.pwned, window.pwnedImg, window.pwnedTitle]") == [None, None, None]
    finally:
        requests.delete(f"{server}/api/documents/{created.json()['document']['id']}", headers=auth, timeout=30)


@contextmanager
def posted(server: str, key: str, payload: dict):
    """A document added through the API for the duration; yields its id."""
    auth = {"Authorization": f"Bearer {key}"}
    created = requests.post(f"{server}/api/documents", json=payload, headers=auth, timeout=60)
    assert created.status_code == 201, created.text
    document_id = created.json()["document"]["id"]
    try:
        yield document_id
    finally:
        requests.delete(f"{server}/api/documents/{document_id}", headers=auth, timeout=30)


def rendered(server: str, question: str, **params) -> str:
    """The server-rendered page (no JavaScript) for a question."""
    response = requests.get(f"{server}/", params={"q": question, **params}, timeout=60)
    assert response.status_code == 200, response.text
    return response.text


def snippets(page: str) -> list[tuple[str, str]]:
    """Each source's (snippet, marked sentence) as text, from a server-rendered page."""
    found = re.findall(r'<p class="snippet">(.*?)</p>', page, re.S)
    marks = [re.search(r"<mark>(.*?)</mark>", s, re.S) for s in found]
    text = [html.unescape(re.sub(r"</?mark>", "", s)) for s in found]
    return [(t, html.unescape(m.group(1)) if m else "") for t, m in zip(text, marks, strict=True)]


def test_long_unbroken_titles_paths_and_words_do_not_widen_the_page(browser, server, api_key_committed):
    from selenium.webdriver.common.by import By

    payload = {
        "title": "Lighthouse" + "L" * 390,
        "source": "share:" + "d" * 294,
        "text": "The lighthouse lamp is cleaned every Friday by the keeper. " + "W" * 600 + " Then it is lit.",
        "collection": "browser-wide",
    }
    width = "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    with posted(server, api_key_committed, payload):
        ask(browser, server, "When is the lighthouse lamp cleaned?", collection="browser-wide")
        assert "L" * 390 in browser.find_element(By.ID, "sources").text
        scroll, client = browser.execute_script(width)
        assert scroll <= client, "the streamed page is wider than the window"
        browser.get(f"{server}/?q=When+is+the+lighthouse+lamp+cleaned%3F&collection=browser-wide")
        assert "d" * 294 in browser.find_element(By.ID, "sources").text
        scroll, client = browser.execute_script(width)
        assert scroll <= client, "the server-rendered page is wider than the window"


# Where ``needle`` is drawn in ``root`` (the left edge of its first occurrence), in pixels.
LEFT_OF = """
var root = arguments[0], needle = arguments[1];
var walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
for (var node = walker.nextNode(); node; node = walker.nextNode()) {
  var at = node.data.indexOf(needle);
  if (at < 0) continue;
  var range = document.createRange();
  range.setStart(node, at);
  range.setEnd(node, at + needle.length);
  return range.getBoundingClientRect().left;
}
return null;
"""


@pytest.fixture(scope="module")
def overridden_document(server, api_key_committed, django_db_blocker):
    """A document stored before ingestion stripped direction overrides: U+202E (right-to-left
    override) in its title and heading. Changed outside any test transaction, so the live server
    sees it."""
    from rag.models import Chunk, Document

    payload = {
        "title": "Tide tables",
        "source": "api:tide-bidi",
        "text": "Tide tables\n\nThe tide gauge at pier four is read every morning by the harbour master.",
        "collection": "browser-bidi",
    }
    with posted(server, api_key_committed, payload) as document_id, django_db_blocker.unblock():
        Document.objects.filter(pk=document_id).update(title="Tide \u202etables")
        Chunk.objects.filter(document_id=document_id).update(heading="Tide \u202enotice \u203a Gauges")
        yield document_id


def test_a_direction_override_in_stored_text_does_not_reorder_the_page(browser, server, overridden_document):
    from selenium.webdriver.common.by import By

    for page in ("streamed", "rendered"):
        if page == "streamed":
            ask(browser, server, "Who reads the tide gauge at pier four?", collection="browser-bidi")
        else:
            browser.get(f"{server}/?q=Who+reads+the+tide+gauge+at+pier+four%3F&collection=browser-bidi")
        meta = browser.find_element(By.CSS_SELECTOR, "#source-1 .meta")
        assert "notice \u203a Gauges" in meta.get_attribute("textContent"), page
        # The line reads left to right as the page wrote it: collection, heading, source, score.
        lefts = [browser.execute_script(LEFT_OF, meta, n) for n in ("browser-bidi", "Tide", "api:tide", "score")]
        assert None not in lefts and lefts == sorted(lefts), (page, lefts)


def test_the_marked_sentence_is_the_servers_after_emoji(browser, server, api_key_committed):
    from selenium.webdriver.common.by import By

    text = (
        "\U0001f600" * 10 + " The tide gauge at pier four is read every morning. The brass gauge was installed "
        "in 1911 by the harbour board. Boats wait at the outer buoy when the tide is low. " + "\U0001f30a" * 700
    )
    payload = {"title": "Gauge history", "source": "api:gauge-emoji", "text": text, "collection": "browser-emoji"}
    question = "When was the brass gauge installed?"
    with posted(server, api_key_committed, payload):
        body = requests.post(
            f"{server}/api/query", json={"question": question, "collection": "browser-emoji"}, timeout=60
        ).json()
        source = body["sources"][0]
        start, end = source["highlight"]
        sentence = source["text"][start:end]  # the API's offsets are Python string (code point) indexes
        assert sentence == "The brass gauge was installed in 1911 by the harbour board."
        server_snippet, server_mark = snippets(rendered(server, question, collection="browser-emoji"))[0]
        assert server_mark == sentence
        ask(browser, server, question, collection="browser-emoji")
        mark = browser.find_element(By.CSS_SELECTOR, "#source-1 .snippet mark").get_attribute("textContent")
        assert mark == sentence
        # The whole snippet is the server's too: cut where the server cuts, no emoji split in two.
        shown = browser.find_element(By.CSS_SELECTOR, "#source-1 .snippet").get_attribute("textContent")
        assert shown == server_snippet and shown.endswith("\U0001f30a…")


def test_the_streamed_page_warns_of_citations_no_source_has(browser, server, fake_chat):
    from selenium.webdriver.common.by import By

    fake_chat.healthy()
    fake_chat.chat_reply = "A yield statement suspends the generator [1], as the tutorial says [7]."
    try:
        question = f"What does a yield statement suspend in {uuid.uuid4().hex[:8]}?"
        ask(browser, server, question)
        assert browser.find_element(By.ID, "answer-text").text.endswith("[7].")
        warning = browser.find_element(By.ID, "invalid-citations")
        assert warning.is_displayed()
        said = warning.text
        assert said == "The answer cites [7], which is not one of the sources."
        browser.get(f"{server}/?q={requests.utils.quote(question)}")  # the server page says the same
        assert browser.find_element(By.ID, "invalid-citations").text == said
    finally:
        fake_chat.chat_reply = None


def test_the_streamed_source_lines_are_the_server_pages(browser, server, fake_chat):
    from selenium.webdriver.common.by import By

    fake_chat.healthy()
    question = "How does the with statement work?"
    ask(browser, server, question)
    streamed = [m.text for m in browser.find_elements(By.CSS_SELECTOR, "#sources .meta")]
    assert any(" \u203a " in line for line in streamed), streamed  # a heading path, as the server shows it
    browser.get(f"{server}/?q=How+does+the+with+statement+work%3F")
    assert streamed == [m.text for m in browser.find_elements(By.CSS_SELECTOR, "#sources .meta")]


STUB_FETCH = """
window.fetch = function () {
  return Promise.resolve(new Response(arguments_body, {status: arguments_status, headers: arguments_headers}));
};
"""


def stub_fetch(status: int, body: str, headers: dict[str, str]) -> str:
    """A script making the page's requests answer ``status`` (a proxy's page, a throttle)."""
    import json

    return (
        STUB_FETCH.replace("arguments_body", json.dumps(body))
        .replace("arguments_status", str(status))
        .replace("arguments_headers", json.dumps(headers))
    )


@pytest.mark.parametrize(
    "status, body, headers, message",
    [
        (
            429,
            '{"error": {"code": "throttled", "message": "Request was throttled. Expected available in 37 seconds."}}',
            {"Content-Type": "application/json", "Retry-After": "37"},
            "Too many questions from your address: please try again in 37 seconds.",
        ),
        (
            429,
            '{"error": {"code": "throttled", "message": "Request was throttled. Expected available in 12 seconds."}}',
            {"Content-Type": "application/json"},
            "Too many questions from your address: please try again in 12 seconds.",
        ),
        (
            502,
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
            {"Content-Type": "text/html"},
            "The server answered HTTP 502; try again.",
        ),
        (
            413,
            "<html><body>Request Entity Too Large</body></html>",
            {"Content-Type": "text/html"},
            "The server answered HTTP 413; try again.",
        ),
    ],
)
def test_a_failed_request_is_explained_as_the_server_page_would(browser, server, status, body, headers, message):
    from selenium.webdriver.common.by import By

    ask(browser, server, "What does the yield statement do?", prepare=stub_fetch(status, body, headers))
    assert browser.find_element(By.ID, "answer").get_attribute("data-state") == "error"
    assert browser.find_element(By.CSS_SELECTOR, "#answer .reason").text == message


def test_a_question_of_invisible_characters_is_refused_as_empty(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    browser.find_element(By.NAME, "q").send_keys("\u202e\u200b \u200e", Keys.ENTER)
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".errors")))
    assert browser.find_element(By.CSS_SELECTOR, ".errors").text == "This field is required."
    assert not browser.find_elements(By.ID, "answer")


def test_a_vote_on_the_streamed_page_comes_back_to_the_answer(browser, server, fake_chat):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    fake_chat.healthy()
    question = "What is a lambda expression?"
    ask(browser, server, question)
    browser.find_element(By.CSS_SELECTOR, "#feedback button[value=up]").click()
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "feedback-thanks")))
    assert browser.find_element(By.ID, "feedback-thanks").text == "Thank you for your feedback."
    assert browser.find_element(By.NAME, "q").get_attribute("value") == question
    assert "[1]" in browser.find_element(By.ID, "answer-text").text
    assert "pydoc:lambda" in browser.find_element(By.ID, "sources").text
    browser.refresh()  # a GET: reloading asks again, it does not post the vote again
    assert "Confirm Form Resubmission" not in browser.page_source
    assert browser.find_element(By.ID, "feedback-thanks").is_displayed()
