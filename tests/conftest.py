"""Shared fixtures: the real (embedded) Postgres test database and a fake Ollama server."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.fixtures_resilience"]


@pytest.fixture
def fake_ollama():
    """A real HTTP server on 127.0.0.1 speaking Ollama's API; tests switch its fault mode."""
    from resilience.testing import FakeOllama

    with FakeOllama() as fake:
        yield fake
