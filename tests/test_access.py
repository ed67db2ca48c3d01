"""API keys, staff sessions and throttles."""

from __future__ import annotations

import json
import os
import re
import threading

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connections
from rest_framework.request import Request

from rag.access import PerIpThrottle
from rag.models import ApiKey, Document, ThrottleCount
from rag.throttling import count_request

pytestmark = pytest.mark.django_db

DOC = {"title": "Key test", "text": "The lighthouse keeper logs every ship.", "collection": "access"}


def post_doc(client, **headers):
    return client.post("/api/documents", json.dumps(DOC), content_type="application/json", **headers)


def ask(client, **headers):
    body = json.dumps({"question": "Who logs the ships?", "collection": "default", "k": 1})
    return client.post("/api/query", body, content_type="application/json", **headers)


def staff_with(*codenames: str) -> User:
    user = User.objects.create_user("-".join(codenames) or "staff", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="rag", codename__in=codenames))
    return user


def revoke(client, key: ApiKey):
    return client.post("/admin/rag/apikey/", {"action": "revoke", "index": 0, "_selected_action": [key.pk]})


def test_writes_without_a_key_are_refused(client):
    response = post_doc(client)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not Document.objects.filter(collection__name="access").exists()


def test_a_key_allows_writes_and_is_stored_hashed(client):
    row, key = ApiKey.issue(name="ci", all_collections=True, can_write=True)
    assert key.startswith("rsk_") and key not in (row.key_hash, row.prefix)
    assert post_doc(client, HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 201
    row.refresh_from_db()
    assert row.last_used_at is not None


def test_a_revoked_or_wrong_key_is_401_not_anonymous(client):
    row, key = ApiKey.issue(name="old")
    row.revoke()
    for header in (f"Bearer {key}", "Bearer rsk_not-a-real-key"):
        response = ask(client, HTTP_AUTHORIZATION=header)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "authentication_failed"


def test_a_staff_session_writes_with_the_model_permissions(client):
    client.force_login(staff_with("add_document", "delete_document"))
    created = post_doc(client)
    assert created.status_code == 201
    assert client.delete(f"/api/documents/{created.json()['document']['id']}").status_code == 204
    assert not Document.objects.filter(collection__name="access").exists()


def test_a_staff_session_without_the_model_permissions_may_not_write(client, api_key):
    document_id = post_doc(client, HTTP_AUTHORIZATION=f"Bearer {api_key}").json()["document"]["id"]
    client.force_login(staff_with("view_apikey"))
    refused = post_doc(client)
    assert refused.status_code == 403
    assert "rag.add_document" in refused.json()["error"]["message"]
    refused = client.delete(f"/api/documents/{document_id}")
    assert refused.status_code == 403
    assert "rag.delete_document" in refused.json()["error"]["message"]
    assert Document.objects.filter(pk=document_id).exists()
    # Each permission covers its own write only.
    client.force_login(staff_with("add_document"))
    assert client.delete(f"/api/documents/{document_id}").status_code == 403


def test_a_superuser_session_may_write(client):
    client.force_login(User.objects.create_superuser("root", password="x"))
    assert post_doc(client).status_code == 201


def test_a_non_staff_session_may_not_write(client):
    client.force_login(User.objects.create_user("reader", password="x"))
    assert post_doc(client).status_code == 403


def test_queries_are_open_by_default(client, demo_corpus):
    assert ask(client).status_code == 200


def test_queries_can_require_a_key(client, demo_corpus, resilience_config):
    resilience_config(access={"queries_require_key": True})
    assert ask(client).status_code == 401
    assert client.get("/api/documents").status_code == 401
    _, key = ApiKey.issue(name="app")
    assert ask(client, HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200


def test_clients_without_a_key_are_throttled_per_address(client, demo_corpus, resilience_config):
    resilience_config(access={"ip_rate": "3/minute"})
    statuses = [ask(client, REMOTE_ADDR="10.1.1.1").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = ask(client, REMOTE_ADDR="10.1.1.1")
    assert refused.json()["error"]["code"] == "throttled"
    assert 0 < int(refused["Retry-After"]) <= 60
    assert ask(client, REMOTE_ADDR="10.1.1.2").status_code == 200  # another address, another budget
    # A spoofed X-Forwarded-For does not buy a fresh budget.
    assert ask(client, REMOTE_ADDR="10.1.1.1", HTTP_X_FORWARDED_FOR="1.2.3.4").status_code == 429


def test_each_key_has_its_own_budget(client, demo_corpus, resilience_config):
    resilience_config(access={"ip_rate": "1/minute", "key_rate": "2/minute"})
    _, first = ApiKey.issue(name="a")
    _, second = ApiKey.issue(name="b")
    assert [ask(client, HTTP_AUTHORIZATION=f"Bearer {first}").status_code for _ in range(3)] == [200, 200, 429]
    assert ask(client, HTTP_AUTHORIZATION=f"Bearer {second}").status_code == 200


def test_staff_issue_a_key_in_the_admin_and_see_it_once(client):
    staff = User.objects.create_superuser("boss", password="x")
    client.force_login(staff)
    response = client.post("/admin/rag/apikey/add/", {"name": "mobile app", "all_collections": "on", "can_write": "on"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    key = re.search(r'<code id="api-key"[^>]*>(rsk_[\w-]+)</code>', response.content.decode()).group(1)
    row = ApiKey.objects.get(name="mobile app")
    assert row.key_hash == ApiKey.hash(key) and key not in str(row.__dict__)
    # The key travels in this page only: not in a cookie (the messages cookie is signed, not
    # encrypted), not in the session, not on the next page.
    assert all(key not in morsel.OutputString() for morsel in response.cookies.values())
    assert key not in str(dict(client.session.items()))
    assert key not in client.get("/admin/rag/apikey/").content.decode()
    assert post_doc(client.__class__(), HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 201
    page = client.get(f"/admin/rag/apikey/{row.pk}/change/").content.decode()
    assert key not in page  # never shown again


def test_staff_who_may_only_view_keys_cannot_revoke_them(client):
    row, key = ApiKey.issue(name="production app")
    client.force_login(staff_with("view_apikey"))
    listing = client.get("/admin/rag/apikey/")
    assert listing.status_code == 200 and "production app" in listing.content.decode()
    assert 'value="revoke"' not in listing.content.decode()  # the action is not offered
    revoke(client, row)  # nor carried out when posted anyway
    row.refresh_from_db()
    assert row.is_active
    assert client.__class__().get("/api/documents", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200


def test_staff_who_may_change_keys_revoke_them(client):
    row, key = ApiKey.issue(name="leaked app")
    client.force_login(staff_with("view_apikey", "change_apikey"))
    assert 'value="revoke"' in client.get("/admin/rag/apikey/").content.decode()
    assert revoke(client, row).status_code == 302
    row.refresh_from_db()
    assert not row.is_active
    assert client.__class__().get("/api/documents", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 401


def test_access_rates_are_validated_in_the_admin(client):
    client.force_login(User.objects.create_superuser("boss", password="x"))
    response = client.post("/admin/resilience/accesssettings/1/change/", {"ip_rate": "lots", "key_rate": "10/minute"})
    assert response.status_code == 200
    assert "Use a rate like" in response.content.decode()


def test_the_previous_window_still_counts_until_it_has_slid_past(rf, db, resilience_config):
    resilience_config(access={"ip_rate": "4/minute"})
    clock = [6000.0]  # the start of a window
    throttle = PerIpThrottle()
    throttle.timer = lambda: clock[0]
    request = Request(rf.post("/api/query", REMOTE_ADDR="10.9.9.9"), authenticators=[])
    assert [throttle.allow_request(request, None) for _ in range(4)] == [True] * 4
    clock[0] += 60 + 15  # a quarter into the next window: three quarters of the last one still weigh
    assert throttle.allow_request(request, None) is True  # 4 * 0.75 + 1 = 4
    assert throttle.allow_request(request, None) is False  # 4 * 0.75 + 2 = 5
    assert throttle.wait() == pytest.approx(15)  # when the old window weighs only half
    clock[0] += 15
    assert throttle.allow_request(request, None) is True  # 4 * 0.5 + 2 = 4: the refusal was not counted


def test_every_worker_counts_against_one_budget(db):
    """Two connections (as two worker processes would have) count into one budget."""
    key = f"throttle_ip_test-{os.getpid()}"

    def in_another_worker(fn):
        result: list = []

        def run() -> None:
            try:
                result.append(fn())
            finally:
                connections.close_all()

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(10)
        return result[0]

    assert in_another_worker(lambda: count_request(key, window=7, duration=60)) == (1, 0)
    assert in_another_worker(lambda: count_request(key, window=7, duration=60)) == (2, 0)
    assert in_another_worker(lambda: count_request(key, window=8, duration=60)) == (1, 2)
    in_another_worker(lambda: ThrottleCount.objects.filter(key=key).delete())
