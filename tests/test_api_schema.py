"""Property-based: schemathesis generates requests from /api/schema/ for every endpoint.

No response may be a 5xx, and every response must match the schema: documented status, content
type and body shape.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def load_schema() -> schemathesis.BaseSchema:
    """The schema the API serves, generated in-process (no request needed at collection time)."""
    from drf_spectacular.generators import SchemaGenerator

    from ragsite.wsgi import application

    loaded = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
    loaded.app = application
    return loaded


schema = load_schema()


@pytest.fixture(autouse=True)
def keep_the_test_connection(demo_corpus, db):
    """Like Django's test client: a request must not close the connection holding the test's transaction."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_endpoint_keeps_its_schema_and_never_fails(case, api_key):
    case.call_and_validate(headers={"Authorization": f"Bearer {api_key}"}, checks=CHECKS)


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_anonymous_callers_get_documented_answers(case):
    case.call_and_validate(checks=CHECKS)
