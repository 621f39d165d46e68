from __future__ import annotations

import pytest

from tests.factories import TEST_PASSWORD

pytestmark = pytest.mark.django_db


def test_home_page_invites_anonymous_users_to_log_in(client):
    response = client.get("/")
    assert response.status_code == 200
    assert b"/accounts/login/" in response.content


def test_login_page_renders_a_form(client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b'name="username"' in response.content
    assert b'name="password"' in response.content


def test_user_logs_in_and_out(client, owner):
    response = client.post("/accounts/login/", {"username": "owner", "password": TEST_PASSWORD}, follow=True)
    assert response.context["user"].username == "owner"
    response = client.post("/accounts/logout/", follow=True)
    assert not response.context["user"].is_authenticated


def test_wrong_password_is_refused_with_a_message(client, owner):
    response = client.post("/accounts/login/", {"username": "owner", "password": "wrong"})
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content


def test_stylesheet_is_served_by_the_project(client):
    response = client.get("/")
    assert b"/static/css/site.css" in response.content
    static = client.get("/static/css/site.css")
    assert static.status_code == 200


def test_unknown_page_renders_the_html_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert b"Not found" in response.content
