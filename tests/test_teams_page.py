"""The search page by team: sign in and out, the collections offered, and those kept out of sight."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from tests.fixtures_teams import ENG, ENG_SECRET, HR, HR_SECRET, LEAVE_Q, PUBLIC

pytestmark = pytest.mark.django_db


def page(client: Client, **params) -> tuple[int, str]:
    response = client.get("/", params)
    return response.status_code, response.content.decode()


def error_of(html: str) -> str:
    return re.search(r'<p class="errors" role="alert">.*?</p>', html, re.S).group(0)


def test_an_anonymous_visitor_sees_and_asks_only_the_public_collections(teams):
    status, html = page(Client())
    assert status == 200 and f'value="{PUBLIC}"' in html
    assert HR not in html and ENG not in html
    assert 'id="sign-in-link"' in html
    status, html = page(Client(), q=LEAVE_Q, collection=HR)
    assert status == 404 and f"No collection named &#x27;{HR}&#x27;." in html
    assert HR_SECRET not in html
    missing_status, missing = page(Client(), q=LEAVE_Q, collection="team-nope")
    assert missing_status == 404 and error_of(missing).replace("team-nope", HR) == error_of(html)


def test_signing_in_shows_the_team_s_collections_and_signing_out_hides_them(teams):
    client = Client()
    signed_in = client.post("/accounts/login/", {"username": "alice", "password": "alice-pass-1234"})
    assert signed_in.status_code == 302 and signed_in["Location"] == "/"
    status, html = page(client)
    assert "Signed in as alice" in html and f'value="{HR}"' in html and ENG not in html
    status, html = page(client, q=LEAVE_Q, collection=[HR, PUBLIC])
    assert status == 200 and HR_SECRET in html
    assert f'<span class="collection">{HR}</span>' in html and f'<span class="collection">{PUBLIC}</span>' in html
    assert ENG_SECRET not in page(client, q="When are canary releases shipped?", collection=[HR])[1]
    signed_out = client.post("/accounts/logout/")
    assert signed_out.status_code == 302
    status, html = page(client, q=LEAVE_Q, collection=HR)
    assert status == 404 and HR_SECRET not in html and "Signed in as" not in html


def test_the_sign_in_page_looks_like_the_site_and_says_what_went_wrong(teams):
    client = Client()
    html = client.get("/accounts/login/", {"next": "/?q=x"}).content.decode()
    assert '<h1><a href="/">RAGsite</a></h1>' in html and 'name="password"' in html and 'value="/?q=x"' in html
    wrong = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert wrong.status_code == 200 and "Please enter a correct username and password" in wrong.content.decode()
    assert "Signed in as" not in page(client)[1]


def test_nothing_ticked_asks_the_default_collection_or_all_when_default_is_not_readable(teams):
    from rag.models import Collection, Visibility

    status, html = page(Client(), q="When does the office open?")
    assert status == 200 and "(none ticked: default)" in html
    Collection.objects.filter(name="default").update(visibility=Visibility.RESTRICTED)
    status, html = page(Client(), q="When does the office open?")
    assert status == 200 and "(none ticked: all of them)" not in html  # one collection: no picker
    assert f'<span class="collection">{PUBLIC}</span>' in html
