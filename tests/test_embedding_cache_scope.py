"""The embedding cache tells nobody what another team's collections hold or what its members ask.

A question whose vector is cached comes back without an ``embed`` stage in ``timings_ms`` (and
faster). Were questions' vectors keyed by their words alone, asking a sentence of a restricted
document word for word, or another team's question, would show that those words were embedded
before: a way to test guesses about what one may not read.
"""

from __future__ import annotations

import pytest
from django.test import Client

from rag.models import CachedEmbedding
from rag.text import text_hash
from tests.fixtures_teams import HR, HR_SECRET, LEAVE_Q, PUBLIC, ask

pytestmark = pytest.mark.django_db

SECRET_SENTENCE = f"{HR_SECRET} pays salaries on the last working day of each month."


def stages(response) -> set[str]:
    assert response.status_code == 200, response.content
    return set(response.json()["timings_ms"])


def test_a_sentence_of_a_restricted_document_asked_word_for_word_is_embedded_afresh(teams):
    assert CachedEmbedding.objects.filter(text_hash=text_hash(SECRET_SENTENCE)).exists(), "ingested and cached"
    outsider = Client()
    assert "embed" in stages(ask(outsider, SECRET_SENTENCE, collection=PUBLIC, use_cache=False))
    wrong_guess = SECRET_SENTENCE.replace("last", "first")
    assert "embed" in stages(ask(outsider, wrong_guess, collection=PUBLIC, use_cache=False))


def test_another_teams_question_is_not_found_in_the_cache(teams):
    member = teams.client_for(teams.alice)
    assert "embed" in stages(ask(member, LEAVE_Q, collection=HR, use_cache=False))
    assert "embed" not in stages(ask(member, LEAVE_Q, collection=HR, use_cache=False)), "cached for HR"
    assert "embed" in stages(ask(Client(), LEAVE_Q, collection=PUBLIC, use_cache=False)), "not for others"
    assert "embed" in stages(ask(member, LEAVE_Q, collections=[HR, PUBLIC], use_cache=False))
