"""Who may read what, edited in the admin (with history), and what staff who are not superusers see."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client
from django.utils import timezone

from rag.models import ApiKey, Collection, EvalRun, Feedback, Job, JobKind, QueryLog, Visibility
from tests.fixtures_teams import ENG, HR, HR_SECRET, LEAVE_Q, PUBLIC, ask, key_for, keyed

pytestmark = pytest.mark.django_db


def staff(user: User, *codenames: str) -> Client:
    user.is_staff = True
    user.save()
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def collection_form(collection: Collection, **changes) -> dict:
    data = {
        "name": collection.name,
        "description": collection.description,
        "visibility": collection.visibility,
        "groups": [group.pk for group in collection.groups.all()],
    }
    return {**data, **changes}


def test_staff_restrict_a_collection_to_groups_and_its_history_says_from_what_to_what(teams):
    admin = teams.client_for(teams.root)
    ops = Group.objects.create(name="ops-team")
    url = f"/admin/rag/collection/{teams.public.pk}/change/"
    assert ask(Client(), LEAVE_Q, collection=PUBLIC).status_code == 200
    response = admin.post(url, collection_form(teams.public, visibility="restricted", groups=[ops.pk]))
    assert response.status_code == 302
    assert ask(Client(), LEAVE_Q, collection=PUBLIC).status_code == 404  # at once, in every process
    history = admin.get(f"{url.removesuffix('change/')}history/").content.decode()
    assert "Visibility: public → restricted" in history
    assert "Groups: (none) → ops-team" in history
    listing = admin.get("/admin/rag/collection/").content.decode()
    assert "ops-team" in listing


def test_staff_cannot_restrict_a_collection_away_from_themselves(teams):
    """Restricted to no group of theirs, it would vanish from their own view: a form error instead."""
    bob = staff(teams.bob, "view_collection", "change_collection")
    ops = Group.objects.create(name="ops-team")
    url = f"/admin/rag/collection/{teams.public.pk}/change/"
    for groups in ([], [ops.pk]):
        response = bob.post(url, collection_form(teams.public, visibility="restricted", groups=groups))
        assert response.status_code == 200 and "Pick at least one group you are in" in response.content.decode()
    assert ask(Client(), LEAVE_Q, collection=PUBLIC).status_code == 200, "left public"
    own = list(teams.bob.groups.values_list("pk", flat=True))
    response = bob.post(url, collection_form(teams.public, visibility="restricted", groups=[*own, ops.pk]))
    assert response.status_code == 302
    assert bob.get(url).status_code == 200, "still his to see"


def test_a_key_s_scope_is_edited_with_history_and_applies_at_its_next_request(teams):
    admin = teams.client_for(teams.root)
    response = admin.post(
        "/admin/rag/apikey/add/", {"name": "hr portal", "collections": [teams.hr.pk], "can_write": "on"}
    )
    assert response.status_code == 200
    row = ApiKey.objects.get(name="hr portal")
    key = response.content.decode().split('id="api-key"')[1].split(">", 1)[1].split("<", 1)[0]
    assert list(row.collections.all()) == [teams.hr] and row.can_write and not row.all_collections
    assert ask(keyed(key), LEAVE_Q, collection=HR).status_code == 200
    url = f"/admin/rag/apikey/{row.pk}/change/"
    assert admin.post(url, {"collections": [teams.eng.pk]}).status_code == 302  # narrowed: no write, eng only
    assert ask(keyed(key), LEAVE_Q, collection=HR).status_code == 404
    history = admin.get(f"/admin/rag/apikey/{row.pk}/history/").content.decode()
    assert f"Collections: {HR} → {ENG}" in history and "May write: on → off" in history
    admin.post("/admin/rag/apikey/", {"action": "revoke", "_selected_action": [row.pk]})
    assert "Revoked." in admin.get(f"/admin/rag/apikey/{row.pk}/history/").content.decode()


def test_staff_cannot_give_a_key_more_than_they_may_read(teams):
    bob = staff(teams.bob, "add_apikey", "change_apikey", "view_apikey")
    form = bob.get("/admin/rag/apikey/add/").content.decode()
    assert f">{ENG}<" in form and f">{PUBLIC}<" in form and HR not in form
    assert 'name="all_collections"' not in form
    bob.post("/admin/rag/apikey/add/", {"name": "sneaky", "collections": [teams.hr.pk], "all_collections": "on"})
    assert not ApiKey.objects.filter(name="sneaky", all_collections=True).exists()
    assert not ApiKey.objects.filter(name="sneaky", collections=teams.hr).exists()
    hr_key, _ = key_for(teams.hr)
    bob.post(f"/admin/rag/apikey/{hr_key.pk}/change/", {"collections": [teams.eng.pk], "can_write": "on"})
    hr_key.refresh_from_db()
    assert list(hr_key.collections.all()) == [teams.hr] and not hr_key.can_write


def test_staff_see_only_what_they_may_read_in_every_list(teams):
    alice = teams.client_for(teams.alice)
    assert ask(alice, LEAVE_Q, collection=HR).status_code == 200
    assert ask(alice, "Who hands over on call?", collection=PUBLIC).status_code == 200
    QueryLog.objects.create(
        question="an old question", question_hash="0", collection="gone", cache="miss", latency_ms=1
    )
    hr_log = QueryLog.objects.filter(question=LEAVE_Q).latest("created_at")
    Feedback.objects.create(query=hr_log, rating="down", comment="wrong number of weeks")
    EvalRun.objects.create(golden_set="hr-set", collection=HR, k=5, summary={}, results=[{"question": LEAVE_Q}])
    Job.objects.create(
        kind=JobKind.INGEST,
        collection=HR,
        source=f"hr:{HR_SECRET}-handbook.pdf",
        status="failed",
        finished_at=timezone.now(),
        reason="bad PDF",
    )
    views = ["view_querylog", "view_document", "view_cachedanswer", "view_collection", "view_feedback"]
    bob = staff(teams.bob, *views, "view_evalrun", "view_job")
    for path in (
        "/admin/rag/querylog/",
        "/admin/rag/document/",
        "/admin/rag/cachedanswer/",
        "/admin/rag/collection/",
        "/admin/rag/feedback/",
        "/admin/rag/evalrun/",
        "/admin/rag/job/",
        "/admin/overview/",
    ):
        html = bob.get(path).content.decode()
        assert HR not in html and LEAVE_Q not in html and HR_SECRET not in html, path
    assert "Who hands over on call?" in bob.get("/admin/rag/querylog/").content.decode()
    assert "an old question" not in bob.get("/admin/rag/querylog/").content.decode()  # its collection is unknown
    assert bob.get(f"/admin/rag/collection/{teams.hr.pk}/change/").status_code == 302  # as if it did not exist
    root = teams.client_for(teams.root).get("/admin/rag/querylog/").content.decode()
    assert LEAVE_Q in root and "an old question" in root
    assert "wrong number of weeks" in teams.client_for(teams.root).get("/admin/rag/feedback/").content.decode()
    assert HR_SECRET in teams.client_for(teams.root).get("/admin/overview/").content.decode()


def test_deleting_a_collection_in_the_admin_takes_its_cached_answers_with_it(teams):
    from rag.models import CachedAnswer

    alice = teams.client_for(teams.alice)
    ask(alice, LEAVE_Q, collection=HR)
    ask(alice, LEAVE_Q, collections=[HR, PUBLIC])
    assert CachedAnswer.objects.filter(collection_ids__contains=[teams.hr.pk]).count() == 2
    admin = teams.client_for(teams.root)
    admin.post(f"/admin/rag/collection/{teams.hr.pk}/delete/", {"post": "yes"})
    assert not Collection.objects.filter(pk=teams.hr.pk).exists()
    assert not CachedAnswer.objects.filter(collection_ids__contains=[teams.hr.pk]).exists()
    assert Collection.objects.get(pk=teams.public.pk).visibility == Visibility.PUBLIC
