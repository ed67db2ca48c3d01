"""Cached answers never cross collections: exact and semantic hits, the same question from two
teams, narrowed and revoked keys, a collection restricted after the fact, single flight and
cache warming. Real Postgres, the real local model."""

from __future__ import annotations

import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connections
from django.test import Client

from rag import answer_cache
from rag.embeddings import LocalEmbedder
from rag.models import CachedAnswer, QueryLog, Visibility
from rag.text import question_hash
from rag.visibility import OPERATOR, resolve
from tests.fixtures_teams import HR, HR_SECRET, LEAVE_Q, PUBLIC, ask, key_for, keyed, text_of

pytestmark = pytest.mark.django_db

PARAPHRASE = "Parental leave: how long is it?"


def entries(question: str) -> list[list[int]]:
    rows = CachedAnswer.objects.filter(question_hash=question_hash(question)).order_by("id")
    return [row.collection_ids for row in rows]


def test_an_exact_hit_is_served_only_to_callers_who_may_read_every_collection(teams):
    alice = teams.client_for(teams.alice)
    assert ask(alice, LEAVE_Q, collection=HR).json()["cache"] == "miss"
    assert ask(alice, LEAVE_Q, collection=HR).json()["cache"] == "exact"
    # The same words from outside: the cached HR answer is one they cannot reach.
    for client in (Client(), teams.client_for(teams.bob), keyed(key_for(teams.eng)[1])):
        assert ask(client, LEAVE_Q, collection=HR).status_code == 404
        for stream in (False, True):
            response = ask(client, LEAVE_Q, collections=["*"], stream=stream)
            assert response.status_code == 200 and HR_SECRET not in text_of(response)
    assert [teams.hr.pk] in entries(LEAVE_Q)


def test_a_semantic_hit_never_comes_from_another_scope(teams, resilience_config):
    resilience_config(cache={"similarity_threshold": 0.9})
    alice, bob = teams.client_for(teams.alice), teams.client_for(teams.bob)
    assert HR_SECRET in str(ask(alice, LEAVE_Q, collections=["*"]).json()["sources"])
    # Alice's paraphrase is a semantic hit (the threshold lets it through)...
    hit = ask(alice, PARAPHRASE, collections=["*"]).json()
    assert hit["cache"] == "semantic" and hit["matched_question"] == LEAVE_Q
    # ...Bob's, asked of every collection he may read, is not: his scope is another set.
    for stream in (False, True):
        response = ask(bob, PARAPHRASE, collections=["*"], stream=stream)
        assert HR_SECRET not in text_of(response) and LEAVE_Q not in text_of(response)


def test_the_same_question_from_two_teams_is_two_entries(teams):
    hr_answer = ask(teams.client_for(teams.alice), LEAVE_Q, collections=["*"]).json()
    eng_answer = ask(teams.client_for(teams.bob), LEAVE_Q, collections=["*"]).json()
    assert hr_answer["cache"] == eng_answer["cache"] == "miss"
    assert HR_SECRET in str(hr_answer["sources"]) and HR_SECRET not in str(eng_answer["sources"])
    hr_set = list(resolve(OPERATOR, hr_answer["collections"]).ids)
    eng_set = list(resolve(OPERATOR, eng_answer["collections"]).ids)
    assert hr_set != eng_set and teams.hr.pk in hr_set and teams.eng.pk in eng_set
    assert sorted(entries(LEAVE_Q)) == sorted([hr_set, eng_set])


def test_a_narrowed_key_no_longer_gets_the_answers_it_cached(teams):
    row, key = key_for(teams.hr)
    for body in ({"collection": HR}, {"collections": ["*"]}):
        assert ask(keyed(key), LEAVE_Q, **body).json()["cache"] == "miss"
        assert ask(keyed(key), LEAVE_Q, **body).json()["cache"] == "exact"
    row.collections.remove(teams.hr)  # its answers still sit in the cache
    assert ask(keyed(key), LEAVE_Q, collection=HR).status_code == 404
    for stream in (False, True):
        response = ask(keyed(key), LEAVE_Q, collections=["*"], stream=stream)
        text = text_of(response)
        assert response.status_code == 200 and HR_SECRET not in text
        # The first is a miss: the collections it may read now are another set than before.
        assert ('"cache": "exact"' in text) is stream


def test_a_collection_restricted_after_its_answers_were_cached_serves_them_no_more(teams):
    anonymous = Client()
    assert ask(anonymous, LEAVE_Q, collection=PUBLIC).json()["cache"] == "miss"
    assert ask(anonymous, LEAVE_Q, collection=PUBLIC).json()["cache"] == "exact"
    teams.public.visibility = Visibility.RESTRICTED
    teams.public.save(update_fields=["visibility"])
    assert ask(anonymous, LEAVE_Q, collection=PUBLIC).status_code == 404
    assert ask(teams.client_for(teams.root), LEAVE_Q, collection=PUBLIC).json()["cache"] == "exact"


def test_single_flight_never_makes_one_team_wait_for_another(teams, resilience_config):
    """An HR miss in flight holds its lock; the same words asked by engineering do not queue on it."""
    resilience_config(pool={"connect_timeout": 10.0, "read_timeout": 20.0})  # how long a waiter would wait
    embedder = LocalEmbedder()
    hr_scope = answer_cache.Scope.for_query(resolve(OPERATOR, [HR]), embedding_model=embedder.name, k=5)
    holding, release = threading.Event(), threading.Event()

    def hold_the_hr_lock() -> None:
        try:
            with answer_cache.single_flight(hr_scope, LEAVE_Q) as locked:
                assert locked
                holding.set()
                release.wait(60)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_hr_lock)
    holder.start()
    try:
        assert holding.wait(30)
        started = time.monotonic()
        response = ask(teams.client_for(teams.bob), LEAVE_Q, collections=["*"])
        waited = time.monotonic() - started
        assert response.status_code == 200 and response.json()["cache"] == "miss"
        assert waited < 10, f"engineering waited {waited:.1f} s on HR's lock"
    finally:
        release.set()
        holder.join(30)


def test_warming_keys_each_answer_by_the_collections_it_was_asked_of(teams, tmp_path):
    alice = teams.client_for(teams.alice)
    ask(alice, LEAVE_Q, collections=["*"], use_cache=False)  # logged, not cached
    logged = QueryLog.objects.filter(question=LEAVE_Q).latest("created_at").collection_ids
    questions = tmp_path / "q.txt"
    questions.write_text(f"{LEAVE_Q}\n", encoding="utf-8")
    call_command("warm_cache", "--file", str(questions), "--collection", HR, "--no-progress", stdout=StringIO())
    call_command("warm_cache", "--top", "5", "--collection", HR, "--no-progress", stdout=StringIO())
    assert sorted(entries(LEAVE_Q)) == sorted([[teams.hr.pk], logged])
    assert ask(alice, LEAVE_Q, collection=HR).json()["cache"] == "exact"
    assert ask(alice, LEAVE_Q, collections=["*"]).json()["cache"] == "exact"
    bob = ask(teams.client_for(teams.bob), LEAVE_Q, collections=["*"]).json()
    assert bob["cache"] == "miss" and HR_SECRET not in str(bob)
