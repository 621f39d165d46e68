"""Permission matrix of every Marketplace endpoint and page: (method, url, role) → status."""

from __future__ import annotations

import datetime as dt

import pytest
from rest_framework.test import APIClient

from tests.marketplace.conftest import IMAGE, T0

pytestmark = pytest.mark.django_db

ENTRY = f"/api/v1/marketplace/entries/{IMAGE.identifier}/creator@example.org/2024-01-01T12:00:00Z/"
ENTRY_PAGE = f"/marketplace/entries/{IMAGE.identifier}/creator@example.org/2024-01-01T12:00:00Z/"
ROLES = ("anonymous", "owner", "outsider", "staff")


@pytest.fixture
def world(owner, outsider, staff, registered, entry_for, keyring):
    """The owner has a key and one entry; the request bodies each role sends."""
    from marketplace import services

    registered(owner, "owner")
    services.entry_upload(raw=entry_for("owner", at=T0), uploader=owner)
    return {
        "users": {"anonymous": None, "owner": owner, "outsider": outsider, "staff": staff},
        "newer_entry": entry_for("owner", at=T0 + dt.timedelta(hours=1)),
        "staff_key": keyring["staff"].armored,
        "fingerprint": keyring["owner"].fingerprint,
    }


def client_for(world, role: str) -> APIClient:
    client = APIClient()
    if world["users"][role] is not None:
        client.force_login(world["users"][role])
    return client


# (method, url, body kind, {role: status})
API_MATRIX = [
    ("post", "/api/v1/marketplace/entries/", "entry", {"anonymous": 401, "owner": 201, "outsider": 201, "staff": 201}),
    ("post", "/api/v1/marketplace/entries/validate/", "entry", dict.fromkeys(ROLES, 200)),
    ("get", ENTRY, None, dict.fromkeys(ROLES, 200)),
    ("get", f"{ENTRY}?format=xml", None, dict.fromkeys(ROLES, 200)),
    ("get", "/api/v1/marketplace/images/", None, dict.fromkeys(ROLES, 200)),
    ("get", f"/api/v1/marketplace/images/{IMAGE.identifier}/", None, dict.fromkeys(ROLES, 200)),
    ("get", "/api/v1/marketplace/endorsers/", None, dict.fromkeys(ROLES, 200)),
    ("get", "/api/v1/marketplace/endorsers/creator@example.org/", None, dict.fromkeys(ROLES, 200)),
    ("get", "/api/v1/accounts/pgp-keys/", None, {"anonymous": 401, "owner": 200, "outsider": 200, "staff": 200}),
    ("post", "/api/v1/accounts/pgp-keys/", "key", {"anonymous": 401, "owner": 400, "outsider": 400, "staff": 201}),
    (
        "post",
        "/api/v1/accounts/pgp-keys/{fp}/revoke/",
        None,
        {"anonymous": 401, "owner": 200, "outsider": 404, "staff": 200},
    ),
    ("delete", "/api/v1/marketplace/entries/", None, {"anonymous": 401, "owner": 405, "outsider": 405, "staff": 405}),
    ("put", ENTRY, None, {"anonymous": 405, "owner": 405, "outsider": 405, "staff": 405}),
]


@pytest.mark.parametrize(("method", "url", "body", "expected"), API_MATRIX, ids=lambda v: str(v)[:60])
@pytest.mark.parametrize("role", ROLES)
def test_api_permission_matrix(world, method, url, body, expected, role):
    client = client_for(world, role)
    url = url.replace("{fp}", world["fingerprint"])
    if body == "entry":
        response = getattr(client, method)(url, data=world["newer_entry"], content_type="application/xml")
    elif body == "key":
        response = getattr(client, method)(url, {"armored": world["staff_key"]}, format="json")
    else:
        response = getattr(client, method)(url)
    assert response.status_code == expected[role], getattr(response, "content", b"")[:300]


PAGE_MATRIX = [
    ("get", "/marketplace/", {"anonymous": 200, "owner": 200, "outsider": 200, "staff": 200}),
    ("get", f"/marketplace/images/{IMAGE.identifier}/", dict.fromkeys(ROLES, 200)),
    ("get", ENTRY_PAGE, dict.fromkeys(ROLES, 200)),
    ("get", f"{ENTRY_PAGE}signed.xml", dict.fromkeys(ROLES, 200)),
    ("get", "/marketplace/endorsers/", dict.fromkeys(ROLES, 200)),
    ("get", "/marketplace/endorsers/creator@example.org/", dict.fromkeys(ROLES, 200)),
    ("get", "/marketplace/upload/", {"anonymous": 302, "owner": 200, "outsider": 200, "staff": 200}),
    ("get", "/marketplace/keys/", {"anonymous": 302, "owner": 200, "outsider": 200, "staff": 200}),
    ("post", "/marketplace/keys/{fp}/revoke/", {"anonymous": 302, "owner": 302, "outsider": 404, "staff": 302}),
    ("get", "/marketplace/keys/{fp}/revoke/", {"anonymous": 302, "owner": 405, "outsider": 405, "staff": 405}),
]


@pytest.mark.parametrize(("method", "url", "expected"), PAGE_MATRIX, ids=lambda v: str(v)[:60])
@pytest.mark.parametrize("role", ROLES)
def test_page_permission_matrix(world, client, method, url, expected, role):
    if world["users"][role] is not None:
        client.force_login(world["users"][role])
    response = getattr(client, method)(url.replace("{fp}", world["fingerprint"]))
    assert response.status_code == expected[role]
    if expected[role] == 302 and role == "anonymous":
        assert response["Location"].startswith("/accounts/login/")


def test_missing_pages_are_404(client, db):
    assert client.get("/marketplace/images/AAAAAAAAAAAAAAAAAAAAAAAAAAA/").status_code == 404
    assert client.get("/marketplace/endorsers/nobody@example.org/").status_code == 404
    assert client.get(f"/marketplace/entries/{IMAGE.identifier}/x@example.org/2024-01-01T12:00:00Z/").status_code == 404
