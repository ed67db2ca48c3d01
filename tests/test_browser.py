"""The search page in headless Chromium (Debian's chromium and chromium-driver) against a live server."""

from __future__ import annotations

import re
import shutil
import uuid

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


def ask(browser, base: str, question: str, collection: str | None = None):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(base + "/")
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
