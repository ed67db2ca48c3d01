"""Fixtures for who-reads-what: two teams' restricted collections, a public one, and the people.

Each restricted collection holds words found nowhere else (``HR_SECRET``, ``ENG_SECRET``), so a
test can tell from any response, page or scrape whether anything of it leaked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from rag.ingestion import ingest_items
from rag.models import ApiKey, Collection, Visibility
from rag.sources import SourceItem

HR = "team-hr"
ENG = "team-eng"
PUBLIC = "handbook"
HR_SECRET = "Quillfeather"
ENG_SECRET = "Zephyrine"
LEAVE_Q = "How long is parental leave?"
DEPLOY_Q = "When does the deploy pipeline ship canary releases?"

TEXTS = {
    HR: {
        "leave": (
            "Parental leave",
            f"Parental leave at {HR_SECRET} lasts sixteen weeks on full pay. Salary bands are reviewed "
            "every March by the remuneration board.",
        ),
        "pay": ("Pay days", f"{HR_SECRET} pays salaries on the last working day of each month."),
    },
    ENG: {
        "deploy": (
            "Deploys",
            f"The {ENG_SECRET} deploy pipeline ships canary releases every Tuesday. Database failover "
            "drills run on the first Monday of each month.",
        ),
        "oncall": ("On call", f"{ENG_SECRET} on-call engineers hand over on Fridays at noon."),
    },
    PUBLIC: {
        "office": ("Office", "The office opens at nine. Visitors sign in at the front desk and wear a badge."),
        "leave": ("Holidays", "Every employee takes at least two weeks of holiday a year; parental leave is separate."),
    },
}


@dataclass
class Teams:
    hr: Collection
    eng: Collection
    public: Collection
    alice: User  # HR
    bob: User  # engineering
    root: User  # superuser

    def client_for(self, user: User | None) -> Client:
        client = Client()
        if user is not None:
            client.force_login(user)
        return client


@pytest.fixture
def teams(db, resilience_config) -> Teams:
    collections = {}
    for name, docs in TEXTS.items():
        items = [
            SourceItem(f"{name}:{key}", f"{title}\n\n{text}".encode(), "text/plain", key)
            for key, (title, text) in docs.items()
        ]
        assert not ingest_items(items, collection_name=name).failures
        collections[name] = Collection.objects.get(name=name)
    hr_team, eng_team = Group.objects.create(name="hr-team"), Group.objects.create(name="eng-team")
    for name, group in ((HR, hr_team), (ENG, eng_team)):
        collections[name].visibility = Visibility.RESTRICTED
        collections[name].save(update_fields=["visibility"])
        collections[name].groups.set([group])
    alice = User.objects.create_user("alice", password="alice-pass-1234")
    alice.groups.add(hr_team)
    bob = User.objects.create_user("bob", password="bob-pass-1234")
    bob.groups.add(eng_team)
    root = User.objects.create_superuser("root", password="root-pass-1234")
    return Teams(collections[HR], collections[ENG], collections[PUBLIC], alice, bob, root)


def key_for(*collections: Collection, write: bool = False, everything: bool = False) -> tuple[ApiKey, str]:
    return ApiKey.issue(name="team key", collections=list(collections), can_write=write, all_collections=everything)


def keyed(key: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def ask(client: Client, question: str, **body: Any):
    payload = json.dumps({"question": question, **body})
    return client.post("/api/query", payload, content_type="application/json")


def text_of(response) -> str:
    """Everything a caller received, streamed or not."""
    if hasattr(response, "streaming_content"):
        return b"".join(response.streaming_content).decode()
    return response.content.decode()
