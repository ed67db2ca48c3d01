"""The search page in headless Chromium (Debian's chromium and chromium-driver) against a live server."""

from __future__ import annotations

import shutil

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
    from resilience.testing import FakeOllama

    with FakeOllama() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(demo_corpus, fake_chat, tmp_path_factory, django_db_blocker):
    env = {
        "OLLAMA_BASE_URL": fake_chat.url,
        "RAGSITE_GENERATION_BACKEND": "ollama",
        "RAGSITE_BREAKER_FAILURE_THRESHOLD": "100",
        "RAGSITE_POOL_MAX_RETRIES": "0",
    }
    with django_db_blocker.unblock(), live_server(tmp_path_factory.mktemp("live"), env=env) as base:
        yield base


def ask(browser, base: str, question: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(base + "/")
    box = browser.find_element(By.NAME, "q")
    box.clear()
    box.send_keys(question, Keys.ENTER)
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "answer-text")))
    return browser


def test_typing_a_question_shows_the_answer_and_its_sources(browser, server, fake_chat):
    from selenium.webdriver.common.by import By

    fake_chat.healthy()
    ask(browser, server, "What does the yield statement do?")
    answer = browser.find_element(By.ID, "answer-text").text
    assert answer.startswith("According to [1]")
    sources = browser.find_elements(By.CSS_SELECTOR, "#sources li")
    assert len(sources) == 5
    assert "pydoc:yield" in sources[0].text
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-flag=degraded]")


def test_degraded_badge_shows_when_ollama_is_down(browser, server, fake_chat):
    from selenium.webdriver.common.by import By

    fake_chat.set_mode("down")
    try:
        ask(browser, server, "What is a lambda expression?")
        badge = browser.find_element(By.CSS_SELECTOR, "[data-flag=degraded]")
        assert badge.is_displayed() and badge.text == "degraded"
        assert "generation unavailable" in browser.find_element(By.CSS_SELECTOR, ".reason").text
        assert "[1]" in browser.find_element(By.ID, "answer-text").text
    finally:
        fake_chat.healthy()


def test_a_document_with_a_script_stays_inert(browser, server, django_db_blocker):
    from selenium.webdriver.common.by import By

    from rag.models import ApiKey

    with django_db_blocker.unblock():
        _, key = ApiKey.issue(name="browser test")
    auth = {"Authorization": f"Bearer {key}"}
    payload = {
        "title": "Harbour <script>window.pwnedTitle = 1</script> notice",
        "text": "The harbour crane <script>window.pwned = 1</script><img src=x onerror='window.pwnedImg=1'> "
        "is inspected every spring by the harbour master.",
        "collection": "browser-xss",
    }
    created = requests.post(f"{server}/api/documents", json=payload, headers=auth, timeout=60)
    assert created.status_code == 201, created.text
    try:
        browser.get(f"{server}/?q=harbour+crane+inspected&collection=browser-xss")
        page = browser.find_element(By.ID, "sources").text
        assert "<script>window.pwned = 1</script>" in page  # shown as text
        assert browser.execute_script("return [window.pwned, window.pwnedImg, window.pwnedTitle]") == [None, None, None]
    finally:
        requests.delete(f"{server}/api/documents/{created.json()['document']['id']}", headers=auth, timeout=30)
