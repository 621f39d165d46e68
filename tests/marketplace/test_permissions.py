"""Permission matrix of every Marketplace endpoint and page: (method, url, role) → status."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from tests.marketplace.conftest import IMAGE, T0

pytestmark = pytest.mark.django_db

ENTRY = f"/api/v1/marketplace/entries/{IMAGE.identifier}/creator@example.org/2024-01-01T12:00:00Z/"
ENTRY_PAGE = f"/marketplace/entries/{IMAGE.identifier}/creator@example.org/2024-01-01T12:00:00Z/"
ROLES = ("anonymous", "owner", "outsider", "staff")
STAFF_ONLY_API = {"anonymous": 401, "owner": 403, "outsider": 403, "staff": 200}
STAFF_ONLY_PAGE = {"anonymous": 302, "owner": 403, "outsider": 403, "staff": 200}
ADMIN_IMAGE = f"/api/v1/admin/images/{IMAGE.identifier}/"
CONSOLE_IMAGE = f"/marketplace/console/images/{IMAGE.identifier}/"
POLICY_BODY = {"min_endorsements": 1, "os": ["ubuntu"]}


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
    # Site policy: anyone sees an image's decision and the site's public key; only staff touch the rest.
    ("get", f"/api/v1/marketplace/images/{IMAGE.identifier}/policy/", None, dict.fromkeys(ROLES, 200)),
    ("get", "/api/v1/marketplace/site-key/", None, dict.fromkeys(ROLES, 200)),
    ("get", "/api/v1/admin/policy/", None, STAFF_ONLY_API),
    ("put", "/api/v1/admin/policy/", "policy", STAFF_ONLY_API),
    ("post", "/api/v1/admin/policy/", "policy", {"anonymous": 401, "owner": 403, "outsider": 403, "staff": 405}),
    ("delete", "/api/v1/admin/policy/", None, {"anonymous": 401, "owner": 403, "outsider": 403, "staff": 405}),
    ("post", "/api/v1/admin/policy/dry-run/", "policy", STAFF_ONLY_API),
    ("get", "/api/v1/admin/policy/dry-run/", None, {"anonymous": 401, "owner": 403, "outsider": 403, "staff": 405}),
    ("post", f"{ADMIN_IMAGE}endorse/", "reason", {"anonymous": 401, "owner": 403, "outsider": 403, "staff": 201}),
    ("post", f"{ADMIN_IMAGE}deprecate/", "reason", {"anonymous": 401, "owner": 403, "outsider": 403, "staff": 201}),
    ("get", f"{ADMIN_IMAGE}endorse/", None, {"anonymous": 401, "owner": 403, "outsider": 403, "staff": 405}),
]


@pytest.mark.parametrize(("method", "url", "body", "expected"), API_MATRIX, ids=lambda v: str(v)[:60])
@pytest.mark.parametrize("role", ROLES)
def test_api_permission_matrix(world, request, method, url, body, expected, role):
    prepare_site(world, request, url)
    client = client_for(world, role)
    url = url.replace("{fp}", world["fingerprint"])
    if body in ("policy", "reason"):
        data = POLICY_BODY if body == "policy" else {"reason": "unsafe"}
        response = getattr(client, method)(url, data, format="json")
    elif body == "entry":
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
    # The staff console: anonymous users go to the login page, other users get 403.
    ("get", "/marketplace/console/", STAFF_ONLY_PAGE),
    ("get", "/marketplace/console/?verdict=denied", STAFF_ONLY_PAGE),
    ("get", CONSOLE_IMAGE, STAFF_ONLY_PAGE),
    ("post", f"{CONSOLE_IMAGE}endorse/", {**STAFF_ONLY_PAGE, "staff": 302}),
    ("get", f"{CONSOLE_IMAGE}endorse/", {**STAFF_ONLY_PAGE, "staff": 405}),
    ("post", f"{CONSOLE_IMAGE}deprecate/", {**STAFF_ONLY_PAGE, "staff": 302}),
    ("post", "/marketplace/console/keys/{fp}/revoke/", {**STAFF_ONLY_PAGE, "staff": 302}),
    ("get", "/marketplace/console/policy/", STAFF_ONLY_PAGE),
    ("post", "/marketplace/console/policy/", STAFF_ONLY_PAGE),
    ("post", "/marketplace/console/policy/import/", STAFF_ONLY_PAGE),
    ("post", "/marketplace/console/policy/confirm/", {**STAFF_ONLY_PAGE, "staff": 302}),
    ("get", "/marketplace/console/site-key/", STAFF_ONLY_PAGE),
]

POLICY_FORM = {"mode": "enforce", "min_endorsements": "1", "os": "ubuntu"}


def page_data(url: str) -> dict:
    """What a staff member's browser would send to each console action."""
    if url.endswith("/console/policy/"):
        return POLICY_FORM
    if url.endswith("/policy/import/"):
        return {"policy_cfg": SimpleUploadedFile("policy.cfg", b"[images]\nblacklistimages = x\n")}
    if url.endswith("/policy/confirm/"):
        return {"rules": json.dumps(POLICY_BODY), "based_on": "0"}
    if url.endswith("/deprecate/"):
        return {"reason": "unsafe"}
    return {}


def prepare_site(world, request, url: str) -> None:
    """The endpoints that sign with the site key get one; deprecating needs the site's endorsement first."""
    if "endorse/" in url or "deprecate/" in url or "site-key/" in url:
        request.getfixturevalue("site_key")
    if url.endswith("deprecate/"):
        from marketplace import services
        from marketplace.models import Image

        image = Image.objects.get(identifier=IMAGE.identifier)
        services.image_site_endorse(actor=world["users"]["staff"], image=image)


@pytest.mark.parametrize(("method", "url", "expected"), PAGE_MATRIX, ids=lambda v: str(v)[:60])
@pytest.mark.parametrize("role", ROLES)
def test_page_permission_matrix(world, client, request, method, url, expected, role):
    if "/console/" in url:
        prepare_site(world, request, url)
    if world["users"][role] is not None:
        client.force_login(world["users"][role])
    data = page_data(url) if method == "post" else {}
    response = getattr(client, method)(url.replace("{fp}", world["fingerprint"]), data)
    assert response.status_code == expected[role]
    if expected[role] == 302 and role == "anonymous":
        assert response["Location"].startswith("/accounts/login/")


def test_missing_pages_are_404(client, db):
    assert client.get("/marketplace/images/AAAAAAAAAAAAAAAAAAAAAAAAAAA/").status_code == 404
    assert client.get("/marketplace/endorsers/nobody@example.org/").status_code == 404
    assert client.get(f"/marketplace/entries/{IMAGE.identifier}/x@example.org/2024-01-01T12:00:00Z/").status_code == 404


# --- Who may endorse as whom: the signing key's owner decides, never the uploader (DESIGN §2.2) --------------

FORGER_UID = "Fay Forger <forger@example.org>"


@pytest.fixture(scope="session")
def forger_key(tmp_path_factory):
    """A key whose extra user ID carries the creator's e-mail."""
    from marketplace import signing
    from tests.marketplace.keys import generate_key

    home = tmp_path_factory.mktemp("forger")
    home.chmod(0o700)
    yield generate_key(home, FORGER_UID, extra_uids=["Casey Creator <creator@example.org>"])
    signing.shutdown_agent(home)


def attack(name: str, world, keyring, forger_key, pgp_keys) -> bytes:
    """A signed entry of one refused attack class, with whatever the server must hold for it to be tried."""
    from django.utils import timezone

    from marketplace import services, signing
    from marketplace.models import PgpKey
    from tests.factories import UserFactory
    from tests.marketplace.conftest import unsigned_entry

    later = T0 + dt.timedelta(hours=2)
    if name == "email-not-owner":
        services.pgp_key_register(
            actor=UserFactory(username="forger", email="forger@example.org"), armored=forger_key.armored
        )
        return forger_key.sign(unsigned_entry(IMAGE), email="creator@example.org", now=later)
    if name == "revoked-key":
        services.pgp_key_revoke(actor=world["users"]["owner"], fingerprint=world["fingerprint"])
        return keyring["owner"].sign(unsigned_entry(IMAGE), now=later)  # dated before the revocation
    if name == "key-expired":
        info = signing.key_trust(pgp_keys.expiring.armored)
        PgpKey.objects.create(
            owner=UserFactory(username="eve", email="eve@example.org"), fingerprint=info.fingerprint,
            uids=list(info.uids), emails=list(info.emails), armored=info.armored, created=info.created,
            expires=info.expires,
        )  # fmt: skip
        at = dt.datetime(2020, 6, 1, tzinfo=dt.UTC)
        return pgp_keys.expiring.sign_endorsed(unsigned_entry(IMAGE), created=at, at=at)
    if name == "signature-expired":
        at = timezone.now().replace(microsecond=0) - dt.timedelta(days=3)
        extra = ["--default-sig-expire", "1d"]
        return keyring["owner"].sign_endorsed(unsigned_entry(IMAGE), created=at, at=at, extra=extra)
    assert name == "signature-malformed"
    end = b"-----END PGP SIGNATURE-----"
    return world["newer_entry"].replace(end, "\u00e9\n".encode() + end)


@pytest.mark.parametrize(
    "name", ["email-not-owner", "revoked-key", "key-expired", "signature-expired", "signature-malformed"]
)
@pytest.mark.parametrize("role", ROLES)
def test_a_refused_endorsement_is_refused_whoever_uploads_it(world, keyring, forger_key, pgp_keys, name, role):
    from marketplace.models import Entry

    raw = attack(name, world, keyring, forger_key, pgp_keys)
    before = Entry.objects.count()

    response = client_for(world, role).post("/api/v1/marketplace/entries/", data=raw, content_type="application/xml")

    assert response.status_code == (401 if role == "anonymous" else 400)
    if role != "anonymous":
        assert response.json()["code"] == name
    assert Entry.objects.count() == before


@pytest.mark.parametrize("role", ROLES)
def test_no_role_may_register_the_site_key_as_its_own(world, site_key, role):
    response = client_for(world, role).post("/api/v1/accounts/pgp-keys/", {"armored": site_key.armored}, format="json")

    assert response.status_code == (401 if role == "anonymous" else 409)
    if role != "anonymous":
        assert response.json()["code"] == "pgp-key-reserved"
