"""Who reads what, through the API: queries plain and streamed, documents, writes, the schema and
the metrics. Each test is an attempt by someone who should not get in, and what they get back."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from rag.models import ApiKey, Document
from tests.fixtures_teams import (
    DEPLOY_Q,
    ENG,
    ENG_SECRET,
    HR,
    HR_SECRET,
    LEAVE_Q,
    PUBLIC,
    ask,
    key_for,
    keyed,
    text_of,
)

pytestmark = pytest.mark.django_db


def not_found(name: str) -> dict:
    return {"error": {"code": "not_found", "message": f"No collection named {name!r}.", "fields": {}}}


# QUERIES


@pytest.mark.parametrize("stream", [False, True])
def test_a_restricted_collection_is_answered_like_one_that_does_not_exist(teams, stream):
    outsiders = {
        "anonymous": Client(),
        "another team": teams.client_for(teams.bob),
        "a key for another team": keyed(key_for(teams.eng)[1]),
        "a key for public collections": keyed(key_for()[1]),
    }
    for who, client in outsiders.items():
        refused = ask(client, LEAVE_Q, collection=HR, stream=stream)
        missing = ask(client, LEAVE_Q, collection="team-nope", stream=stream)
        assert (refused.status_code, missing.status_code) == (404, 404), who
        assert refused.json() == not_found(HR) and missing.json() == not_found("team-nope"), who
        # Asked among others, by id order or name order, the answer is the same.
        both = ask(client, LEAVE_Q, collections=[PUBLIC, HR], stream=stream)
        assert both.status_code == 404 and both.json() == not_found(HR), who


@pytest.mark.parametrize("stream", [False, True])
def test_members_read_their_team_and_each_source_names_its_collection(teams, stream):
    response = ask(teams.client_for(teams.alice), LEAVE_Q, collections=[HR, PUBLIC], stream=stream)
    assert response.status_code == 200
    if stream:
        meta = json.loads(text_of(response).splitlines()[0])
        sources, collection = meta["sources"], meta["collection"]
        assert meta["collections"] == sorted([HR, PUBLIC])
    else:
        body = response.json()
        sources, collection = body["sources"], body["collection"]
        assert body["collections"] == sorted([HR, PUBLIC])
    assert collection == ",".join(sorted([HR, PUBLIC]))
    assert {s["collection"] for s in sources} == {HR, PUBLIC}
    assert any(HR_SECRET in s["text"] and s["collection"] == HR for s in sources)


@pytest.mark.parametrize("stream", [False, True])
def test_every_collection_means_every_one_the_caller_may_read(teams, stream):
    for client, seen, unseen in [
        (Client(), {PUBLIC}, (HR_SECRET, ENG_SECRET, HR, ENG)),
        (teams.client_for(teams.bob), {PUBLIC, ENG}, (HR_SECRET, HR)),
        (keyed(key_for(teams.hr)[1]), {PUBLIC, HR}, (ENG_SECRET, ENG)),
    ]:
        response = ask(client, f"{LEAVE_Q} {DEPLOY_Q}", collections=["*"], stream=stream, k=20)
        assert response.status_code == 200
        text = text_of(response)
        assert not any(word in text for word in unseen), text
        sources = json.loads(text.splitlines()[0])["sources"] if stream else response.json()["sources"]
        assert {s["collection"] for s in sources} <= seen | {"default"}
    root = ask(teams.client_for(teams.root), f"{LEAVE_Q} {DEPLOY_Q}", collections=["*"], k=20)
    assert HR_SECRET in text_of(root) and ENG_SECRET in text_of(root)


def test_a_revoked_key_reads_nothing_more(teams):
    row, key = key_for(teams.hr)
    assert ask(keyed(key), LEAVE_Q, collection=HR).status_code == 200
    row.revoke()
    for body in ({"collection": HR}, {"collections": ["*"]}, {"collection": PUBLIC, "stream": True}):
        response = ask(keyed(key), LEAVE_Q, **body)
        assert response.status_code == 401 and HR_SECRET not in text_of(response)


def test_bad_collection_lists_are_refused_with_a_message(teams):
    client = teams.client_for(teams.alice)
    for body, field in [
        ({"collections": []}, "collections"),
        ({"collections": ["*", HR]}, "collections"),
        ({"collections": ["../etc"]}, "collections"),
        ({"collections": HR}, "collections"),
        ({"collections": [f"c{i}" for i in range(51)]}, "collections"),
        ({"collections": [HR], "collection": PUBLIC}, "collections"),
    ]:
        response = ask(client, LEAVE_Q, **body)
        assert response.status_code == 400, body
        assert field in response.json()["error"]["fields"], response.json()


# DOCUMENTS


def test_documents_of_a_restricted_collection_are_not_listed_or_shown(teams):
    hr_doc = Document.objects.filter(collection=teams.hr).first()
    for client in (Client(), teams.client_for(teams.bob), keyed(key_for(teams.eng)[1])):
        listed = client.get("/api/documents").json()["results"]
        assert not any(d["collection"] == HR for d in listed) and HR_SECRET not in json.dumps(listed)
        assert client.get("/api/documents", {"collection": HR}).json() == not_found(HR)
        assert client.get("/api/documents", {"collection": "team-nope"}).json() == not_found("team-nope")
        detail = client.get(f"/api/documents/{hr_doc.pk}")
        missing = client.get("/api/documents/999999999")
        assert detail.status_code == missing.status_code == 404 and detail.json() == missing.json()
    alice = teams.client_for(teams.alice)
    assert alice.get(f"/api/documents/{hr_doc.pk}").json()["collection"] == HR
    assert {d["collection"] for d in alice.get("/api/documents", {"collection": HR}).json()["results"]} == {HR}


def test_a_key_writes_only_where_its_scope_says(teams):
    hr_doc = Document.objects.filter(collection=teams.hr).first()
    doc = {"title": "Note", "text": "A new note about the printers on floor two."}

    def post(client: Client, collection: str):
        return client.post(
            "/api/documents", json.dumps({**doc, "collection": collection}), content_type="application/json"
        )

    reader = keyed(key_for(teams.eng)[1])
    refused = post(reader, ENG)
    assert refused.status_code == 403 and "may only read" in refused.json()["error"]["message"]
    eng_writer = keyed(key_for(teams.eng, write=True)[1])
    assert post(eng_writer, ENG).status_code == 201
    assert post(eng_writer, HR).json() == not_found(HR)  # not even told that it exists
    assert post(eng_writer, "brand-new").json() == not_found("brand-new")  # scoped keys create nothing
    public = post(eng_writer, PUBLIC)  # it may read the public collection, not write to it
    assert public.status_code == 403 and "not in its scope" in public.json()["error"]["message"]
    assert eng_writer.delete(f"/api/documents/{hr_doc.pk}").status_code == 404
    assert Document.objects.filter(pk=hr_doc.pk).exists()
    assert post(keyed(key_for(write=True, everything=True)[1]), "brand-new").status_code == 201


def test_a_staff_session_writes_only_to_collections_it_may_read(teams):
    from django.contrib.auth.models import Permission

    teams.bob.is_staff = True
    teams.bob.save()
    teams.bob.user_permissions.add(*Permission.objects.filter(codename__in=["add_document", "delete_document"]))
    bob = teams.client_for(teams.bob)
    hr_doc = Document.objects.filter(collection=teams.hr).first()
    body = json.dumps({"title": "Note", "text": "Printers on floor two.", "collection": HR})
    assert bob.post("/api/documents", body, content_type="application/json").json() == not_found(HR)
    assert bob.delete(f"/api/documents/{hr_doc.pk}").status_code == 404
    body = json.dumps({"title": "Note", "text": "Printers on floor two.", "collection": ENG})
    assert bob.post("/api/documents", body, content_type="application/json").status_code == 201


# WHAT ELSE A CALLER CAN READ: THE SCHEMA AND THE METRICS


def test_the_schema_and_the_metrics_say_nothing_of_the_collections(teams):
    alice = teams.client_for(teams.alice)
    for question in (LEAVE_Q, DEPLOY_Q):
        assert ask(alice, question, collections=["*"]).status_code == 200
        assert ask(teams.client_for(teams.root), question, collections=["*"]).status_code == 200
    outsider = Client()
    for path in ("/api/schema/", "/api/docs/", "/metrics", "/api/semantic-cache/metrics", "/health"):
        text = outsider.get(path).content.decode()
        for word in (HR, ENG, HR_SECRET, ENG_SECRET, LEAVE_Q, "parental"):
            assert word not in text, (path, word)


def test_an_unscoped_key_reads_public_collections_only(teams):
    row, key = ApiKey.issue(name="plain")
    assert not row.all_collections and not row.can_write and not row.collections.exists()
    assert ask(keyed(key), LEAVE_Q, collection=PUBLIC).status_code == 200
    assert ask(keyed(key), LEAVE_Q, collection=HR).status_code == 404


def test_a_job_of_a_restricted_collection_is_followed_only_by_those_who_may_read_it(teams):
    from rag.models import Job, JobKind

    job = Job.objects.create(kind=JobKind.INGEST, collection=HR, source="hr:salary-bands-2027.pdf")
    warm = Job.objects.create(kind=JobKind.WARM_CACHE, collection=HR, params={"questions": [[[HR], LEAVE_Q]]})
    for client in (Client(), teams.client_for(teams.bob), keyed(key_for(teams.eng, write=True)[1])):
        for pk in (job.pk, warm.pk):
            response = client.get(f"/api/jobs/{pk}")
            assert response.status_code == 404 and "salary" not in response.content.decode()
        assert client.delete(f"/api/jobs/{job.pk}").status_code in (401, 403, 404)
    assert teams.client_for(teams.alice).get(f"/api/jobs/{job.pk}").json()["source"] == "hr:salary-bands-2027.pdf"
    assert teams.client_for(teams.alice).get(f"/api/jobs/{warm.pk}").status_code == 404  # operators' jobs
    assert teams.client_for(teams.root).get(f"/api/jobs/{warm.pk}").status_code == 200


def test_feedback_on_another_team_s_answer_is_refused_like_an_unknown_one(teams):
    from rag.models import CachedAnswer, Feedback

    alice = teams.client_for(teams.alice)
    query_id = ask(alice, LEAVE_Q, collection=HR).json()["query_id"]
    assert CachedAnswer.objects.filter(collection_ids=[teams.hr.pk]).count() == 1
    for client in (teams.client_for(teams.bob), keyed(key_for(teams.eng)[1]), Client()):
        body = json.dumps({"query_id": query_id, "rating": "down", "comment": "spam"})
        response = client.post("/api/feedback", body, content_type="application/json")
        assert response.status_code == 404 and LEAVE_Q not in response.content.decode()
        page = client.post("/feedback", {"query_id": query_id, "rating": "down"})
        assert page.status_code == 404
    assert not Feedback.objects.filter(query_id=query_id).exists()
    assert CachedAnswer.objects.filter(collection_ids=[teams.hr.pk]).count() == 1  # nothing evicted
    body = json.dumps({"query_id": query_id, "rating": "down"})
    assert alice.post("/api/feedback", body, content_type="application/json").json()["evicted"] == 1
