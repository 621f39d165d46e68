"""Logins are locked per (username, client address) after LOGIN_FAILURE_LIMIT failures, for
LOGIN_LOCKOUT_MINUTES after the latest one: the login page and the Django admin's alike."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.conf import settings
from django.test import Client
from django.utils import timezone

from tests.factories import TEST_PASSWORD

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/?next=/admin/"


def log_in(client: Client, username: str, password: str, url: str = LOGIN, **headers: str):
    return client.post(url, {"username": username, "password": password}, **headers)


def logged_in(response) -> bool:
    return response.status_code == 302 and "_auth_user_id" in response.client.session


def test_the_defaults_are_five_failures_and_fifteen_minutes():
    assert settings.AXES_FAILURE_LIMIT == 5
    assert dt.timedelta(minutes=15) == settings.AXES_COOLOFF_TIME
    assert settings.AUTHENTICATION_BACKENDS[0] == "core.throttling.LoginLockoutBackend"


def test_the_sixth_attempt_after_five_wrong_passwords_gets_the_lockout_page(owner, client):
    statuses = [log_in(client, "owner", f"wrong-{n}").status_code for n in range(5)]
    assert statuses == [200] * 4 + [429]  # the fifth failure already answers with the lockout
    refused = log_in(client, "owner", TEST_PASSWORD)
    assert refused.status_code == 429
    assert refused["Retry-After"] == "900"
    page = refused.content.decode()
    assert "Too many failed logins" in page
    assert "after 5 failed attempts, for 15 minutes" in page
    assert 'class="topbar"' in page  # in the site's layout
    assert "_auth_user_id" not in client.session


def test_forty_wrong_passwords_then_the_right_one_is_refused_until_the_cool_off_has_passed(owner, outsider, client):
    start = timezone.now()
    with time_machine.travel(start, tick=False) as traveller:
        for n in range(40):
            log_in(client, "owner", f"guess-{n}")
        refused = log_in(client, "owner", TEST_PASSWORD)
        assert refused.status_code == 429
        assert "Too many failed logins" in refused.content.decode()
        # Another user from the same address is not locked out.
        assert logged_in(log_in(Client(), "outsider", TEST_PASSWORD))
        # Still locked just before the cool-off, counted from the latest attempt, ends ...
        traveller.shift(dt.timedelta(minutes=14, seconds=59))
        assert log_in(client, "owner", TEST_PASSWORD).status_code == 429
        # ... and that refused attempt started it again: hammering keeps the lock.
        traveller.shift(dt.timedelta(minutes=14, seconds=59))
        assert log_in(client, "owner", TEST_PASSWORD).status_code == 429
        traveller.shift(dt.timedelta(minutes=15, seconds=1))
        assert logged_in(log_in(client, "owner", TEST_PASSWORD))


def test_the_lockout_is_per_username_and_address(owner, client):
    for n in range(5):
        log_in(client, "owner", f"wrong-{n}")
    assert log_in(client, "owner", TEST_PASSWORD).status_code == 429
    assert logged_in(log_in(Client(REMOTE_ADDR="192.0.2.44"), "owner", TEST_PASSWORD))


def test_a_forged_forwarded_for_header_does_not_escape_the_lockout(owner, client):
    for n in range(5):
        log_in(client, "owner", f"wrong-{n}", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")
    assert log_in(client, "owner", TEST_PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.200").status_code == 429


def test_behind_one_proxy_the_lockout_keys_on_the_hop_the_proxy_wrote(owner, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    proxy = Client(REMOTE_ADDR="127.0.0.1")
    for n in range(5):
        log_in(proxy, "owner", f"wrong-{n}", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}, 192.0.2.10")
    assert log_in(proxy, "owner", TEST_PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.10").status_code == 429
    assert logged_in(log_in(proxy, "owner", TEST_PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.11"))


def test_the_django_admin_login_is_locked_out_too(staff, client):
    for n in range(5):
        log_in(client, "staff", f"wrong-{n}", url=ADMIN_LOGIN)
    refused = log_in(client, "staff", TEST_PASSWORD, url=ADMIN_LOGIN)
    assert refused.status_code == 429
    assert "Too many failed logins" in refused.content.decode()
    # The portal's login page shares the count: it is the same user from the same address.
    assert log_in(client, "staff", TEST_PASSWORD).status_code == 429


def test_a_right_password_before_the_limit_clears_the_failures(owner, client):
    for n in range(4):
        log_in(client, "owner", f"wrong-{n}")
    assert logged_in(log_in(client, "owner", TEST_PASSWORD))
    client.logout()
    for n in range(4):
        log_in(client, "owner", f"again-{n}")
    assert logged_in(log_in(client, "owner", TEST_PASSWORD))


def test_calls_without_a_request_are_not_counted(owner):
    from django.contrib.auth import authenticate

    for _ in range(10):
        assert authenticate(username="owner", password="wrong") is None
    assert authenticate(username="owner", password=TEST_PASSWORD) == owner
