"""Rate limits tell clients apart by one rule: REMOTE_ADDR unless NUM_PROXIES says our own proxies write
X-Forwarded-For, and then the hop they wrote. A client-chosen X-Forwarded-For never makes a new client."""

from __future__ import annotations

import uuid

import pytest
from django.test import RequestFactory
from rest_framework.throttling import SimpleRateThrottle

from core.throttling import client_address, login_client_address
from tests.accounts.conftest import registration_body

pytestmark = pytest.mark.django_db

REGISTRATIONS = "/api/v1/accounts/registrations/"


def random_address() -> str:
    return f"198.51.100.{uuid.uuid4().int % 250 + 1}, 203.0.113.{uuid.uuid4().int % 250 + 1}"


def register(api, n: int, **headers: str):
    body = registration_body(username=f"user_{n}", email=f"user{n}@example.org")
    return api.post(REGISTRATIONS, body, format="json", **headers)


@pytest.fixture
def two_per_hour(monkeypatch):
    # DRF reads the rates once, into the throttle class: set this test's rate there.
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "registration", "2/hour")


@pytest.fixture
def one_proxy(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}


def test_registrations_with_random_forwarded_for_headers_are_refused_after_the_limit(api, client, two_per_hour):
    statuses = [register(api, n, HTTP_X_FORWARDED_FOR=random_address()).status_code for n in range(12)]
    assert statuses == [201, 201] + [429] * 10
    # The registration page shares the bucket, and a forged header does not get it a new one either.
    page = client.post("/accounts/register/", {"username": "user_99"}, HTTP_X_FORWARDED_FOR=random_address())
    assert page.status_code == 429


def test_with_one_proxy_the_last_hop_is_the_client(api, two_per_hour, one_proxy):
    # The proxy appends the address it saw; whatever the client put in front of it does not count.
    for n in range(2):
        assert register(api, n, HTTP_X_FORWARDED_FOR=f"10.9.9.{n}, 192.0.2.7").status_code == 201
    refused = register(api, 2, HTTP_X_FORWARDED_FOR="10.9.9.99, 192.0.2.7")
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    # Another client behind the same proxy has its own bucket.
    assert register(api, 3, HTTP_X_FORWARDED_FOR="192.0.2.8").status_code == 201


def test_no_proxy_means_the_connecting_address_whatever_the_header_says():
    request = RequestFactory().get("/", REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="10.0.0.1, 10.0.0.2")
    assert client_address(request) == "192.0.2.1"
    assert login_client_address(request) == "192.0.2.1"


def test_one_proxy_means_the_hop_it_wrote(one_proxy):
    request = RequestFactory().get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="10.0.0.1, 192.0.2.9")
    assert client_address(request) == "192.0.2.9"
    assert login_client_address(request) == "192.0.2.9"
    # Without the header (a request that did not pass the proxy) the connecting address counts.
    assert client_address(RequestFactory().get("/", REMOTE_ADDR="192.0.2.2")) == "192.0.2.2"


def test_a_hop_that_is_not_an_address_counts_as_the_connecting_peer_for_logins(one_proxy):
    request = RequestFactory().get("/", REMOTE_ADDR="192.0.2.3", HTTP_X_FORWARDED_FOR="<script>")
    assert login_client_address(request) == "192.0.2.3"
