"""Fixtures for the resilience tests (breaker, pool, client)."""
