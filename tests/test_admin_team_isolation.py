"""Staff of one team can neither see, revoke nor flush what belongs to another team: API keys
and cached answers in the admin."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.test import Client, RequestFactory

from rag.models import ApiKey, CachedAnswer
from tests.fixtures_teams import DEPLOY_Q, ENG, HR, LEAVE_Q, PUBLIC, ask, keyed

pytestmark = pytest.mark.django_db

KEYS = "/admin/rag/apikey/"
FLUSH = "/admin/rag/cachedanswer/flush/"


def staff(user: User, *codenames: str) -> Client:
    user.is_staff = True
    user.save()
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="rag", codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def works(key: str, collection: str) -> bool:
    return ask(keyed(key), LEAVE_Q, collection=collection).status_code == 200


def notes(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.fixture
def team_keys(teams):
    """Bob's (engineering) key, HR's key and the superuser's key for every collection."""
    return {
        "eng": ApiKey.issue(name="eng deploy bot", collections=[teams.eng], created_by=teams.bob),
        "hr": ApiKey.issue(name="hr portal", collections=[teams.hr], created_by=teams.alice),
        "all": ApiKey.issue(name="root everything", all_collections=True, created_by=teams.root),
    }


def test_a_team_cannot_revoke_another_team_s_key_or_the_superuser_s(teams, team_keys):
    bob = staff(teams.bob, "view_apikey", "change_apikey")
    selected = [row.pk for row, _ in team_keys.values()]
    response = bob.post(KEYS, {"action": "revoke", "index": 0, "_selected_action": selected}, follow=True)
    assert notes(response) == ["Revoked 1 key(s)."]  # the other two are not his to see
    assert not works(team_keys["eng"][1], ENG)  # his own team's key is revoked: 401
    assert works(team_keys["hr"][1], HR)  # HR's and the superuser's keys still answer
    assert works(team_keys["all"][1], HR) and works(team_keys["all"][1], ENG)


def test_revoke_checks_each_key_even_when_handed_one_it_may_not_change(teams, team_keys):
    staff(teams.bob, "view_apikey", "change_apikey")
    request = RequestFactory().post(KEYS)
    request.user = User.objects.get(pk=teams.bob.pk)
    request.session = {}
    request._messages = FallbackStorage(request)
    admin.site._registry[ApiKey].revoke(request, ApiKey.objects.all())  # the scope grew after the list was shown
    assert [str(message) for message in request._messages] == [
        "Revoked 1 key(s); 2 left alone: they read collections you may not change."
    ]
    assert works(team_keys["hr"][1], HR) and works(team_keys["all"][1], ENG)
    assert not works(team_keys["eng"][1], ENG)


def test_a_team_s_key_list_change_and_history_pages_hide_other_teams_keys(teams, team_keys):
    bob = staff(teams.bob, "view_apikey", "change_apikey")
    public_key, _ = ApiKey.issue(name="public widget")
    listing = bob.get(KEYS).content.decode()
    assert team_keys["eng"][0].prefix in listing and public_key.prefix in listing
    for hidden in ("hr", "all"):
        row = team_keys[hidden][0]
        assert row.prefix not in listing and row.name not in listing
        for page in ("change", "history"):
            response = bob.get(f"{KEYS}{row.pk}/{page}/", follow=True)
            assert response.redirect_chain[0] == ("/admin/", 302), page  # as if it did not exist
            html = response.content.decode()
            assert "doesn\u2019t exist" in html and row.prefix not in html and HR not in html
    assert HR not in listing and "every collection" not in listing
    assert bob.get(KEYS, {"q": team_keys["hr"][0].prefix}).content.decode().count("hr portal") == 0
    root = teams.client_for(teams.root).get(KEYS).content.decode()
    assert all(row.prefix in root for row, _ in team_keys.values())


def test_a_key_bob_created_disappears_from_his_list_once_it_reads_another_team_s_collection(teams, team_keys):
    bob = staff(teams.bob, "view_apikey", "change_apikey")
    row, key = team_keys["eng"]
    assert row.prefix in bob.get(KEYS).content.decode()
    row.collections.add(teams.hr)  # the superuser widened it
    listing = bob.get(KEYS).content.decode()
    assert row.prefix not in listing and HR not in listing
    assert bob.get(f"{KEYS}{row.pk}/change/").status_code == 302
    bob.post(KEYS, {"action": "revoke", "index": 0, "_selected_action": [row.pk]})
    assert works(key, HR)


def cache_both_teams(teams) -> None:
    alice, bob = teams.client_for(teams.alice), teams.client_for(teams.bob)
    assert ask(alice, LEAVE_Q, collection=HR).json()["cache"] == "miss"
    assert ask(bob, DEPLOY_Q, collection=ENG).json()["cache"] == "miss"
    assert ask(bob, LEAVE_Q, collections=[ENG, PUBLIC]).json()["cache"] == "miss"
    assert ask(alice, LEAVE_Q, collection=HR).json()["cache"] == "exact"


def test_a_team_s_flush_deletes_only_its_own_cached_answers(teams):
    cache_both_teams(teams)
    bob = staff(teams.bob, "view_cachedanswer", "delete_cachedanswer")
    confirm = bob.get(FLUSH).content.decode()
    assert "Delete the 2 cached answers of the collections you may read?" in confirm  # not the three of every team
    assert CachedAnswer.objects.count() == 3
    response = bob.post(FLUSH, follow=True)
    assert "2 answers deleted" in response.content.decode()
    assert ask(teams.client_for(teams.alice), LEAVE_Q, collection=HR).json()["cache"] == "exact"
    assert ask(teams.client_for(teams.bob), DEPLOY_Q, collection=ENG).json()["cache"] == "miss"
    assert LEAVE_Q in teams.client_for(teams.root).get("/admin/rag/cachedanswer/").content.decode()


def test_the_superuser_s_flush_still_empties_the_whole_cache(teams):
    cache_both_teams(teams)
    root = teams.client_for(teams.root)
    assert "Delete all 3 cached answers?" in root.get(FLUSH).content.decode()
    assert "3 answers deleted" in root.post(FLUSH, follow=True).content.decode()
    assert ask(teams.client_for(teams.alice), LEAVE_Q, collection=HR).json()["cache"] == "miss"


def test_feedback_given_with_another_team_s_key_does_not_name_the_key(teams, team_keys):
    hr_key = keyed(team_keys["hr"][1])
    answer = ask(hr_key, LEAVE_Q, collection=PUBLIC).json()
    body = {"query_id": answer["query_id"], "rating": "down"}
    assert hr_key.post("/api/feedback", body, content_type="application/json").status_code in (200, 201)
    listing = "/admin/rag/feedback/"
    seen_by_bob = staff(teams.bob, "view_feedback").get(listing).content.decode()
    assert LEAVE_Q in seen_by_bob and "an API key" in seen_by_bob
    assert "hr portal" not in seen_by_bob
    assert "key hr portal" in teams.client_for(teams.root).get(listing).content.decode()
