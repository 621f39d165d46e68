from __future__ import annotations

import pytest

from portal import health

# Port 9 on loopback has no listener: a real refused connection, not a mock.
CLOSED_BROKER = "redis://127.0.0.1:9/0"

pytestmark = pytest.mark.django_db


def test_healthz_reports_database_and_broker(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True
    assert "worker" not in body["checks"]


def test_broker_check_names_the_transport_and_the_refusal():
    check = health.check_broker(CLOSED_BROKER)
    assert check.ok is False
    assert check.detail.startswith("redis:")
    assert "refused" in check.detail.lower()


def test_healthz_fails_when_the_broker_is_unreachable(client, monkeypatch):
    real_check = health.check_broker
    monkeypatch.setattr(health, "check_broker", lambda: real_check(CLOSED_BROKER))
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["broker"]["detail"].startswith("redis:")
