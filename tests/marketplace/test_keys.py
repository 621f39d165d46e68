"""Registering and revoking OpenPGP keys (API ``accounts/pgp-keys/``, services)."""

from __future__ import annotations

import pytest

from core.models import AuditEntry
from marketplace import signing
from marketplace.models import PgpKey

pytestmark = pytest.mark.django_db

KEYS = "/api/v1/accounts/pgp-keys/"


def test_user_registers_a_key_carrying_their_email(owner, keyring, api_as):
    response = api_as(owner).post(KEYS, {"armored": keyring["owner"].armored}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["fingerprint"] == keyring["owner"].fingerprint
    assert "Casey Creator <creator@example.org>" in body["uids"]
    assert body["created"].startswith("2020-01-01")
    assert body["revoked"] is False
    key = PgpKey.objects.get()
    assert key.owner == owner
    assert signing.key_lookup(key.fingerprint) is not None  # now trusted for verifying
    assert AuditEntry.objects.filter(action="marketplace.pgp_key.registered", actor=owner).exists()
    assert [k["fingerprint"] for k in api_as(owner).get(KEYS).json()["results"]] == [key.fingerprint]


def test_a_key_without_the_accounts_email_is_refused(outsider, keyring, api_as):
    response = api_as(outsider).post(KEYS, {"armored": keyring["owner"].armored}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "pgp-key-email"
    assert "mallory@example.org" in response.json()["detail"]
    assert not PgpKey.objects.exists()
    assert signing.key_lookup(keyring["owner"].fingerprint) is None  # nothing trusted either


def test_a_secret_key_is_refused(outsider, pgp_keys, api_as):
    response = api_as(outsider).post(KEYS, {"armored": pgp_keys.secret_armored}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "pgp-key-secret"
    assert not PgpKey.objects.exists()


@pytest.mark.parametrize("armored", ["", "not a key", "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nzzzz\n"])
def test_garbage_is_refused(owner, api_as, armored):
    response = api_as(owner).post(KEYS, {"armored": armored}, format="json")
    assert response.status_code == 400
    assert not PgpKey.objects.exists()


def test_two_keys_in_one_block_are_refused(owner, pgp_keys, api_as):
    response = api_as(owner).post(KEYS, {"armored": pgp_keys.two_keys_armored}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "pgp-key-count"


def test_an_expired_key_is_refused(db, pgp_keys, api_as):
    from tests.factories import UserFactory

    eve = UserFactory(username="eve", email=pgp_keys.expiring.email)
    response = api_as(eve).post(KEYS, {"armored": pgp_keys.expiring.armored}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "pgp-key-expired"


def test_a_key_registered_already_is_a_conflict(owner, registered, keyring, api_as):
    registered(owner, "owner")
    response = api_as(owner).post(KEYS, {"armored": keyring["owner"].armored}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "pgp-key-registered"
    assert PgpKey.objects.count() == 1


def test_owner_revokes_their_key(owner, registered, api_as):
    key = registered(owner, "owner")
    response = api_as(owner).post(f"{KEYS}{key.fingerprint}/revoke/")
    assert response.status_code == 200
    assert response.json()["revoked"] is True
    key.refresh_from_db()
    assert key.revoked_at is not None and key.revoked_by == owner
    audit = AuditEntry.objects.get(action="marketplace.pgp_key.revoked")
    assert audit.actor == owner and audit.details["fingerprint"] == key.fingerprint
    again = api_as(owner).post(f"{KEYS}{key.fingerprint}/revoke/")
    assert again.status_code == 409 and again.json()["code"] == "pgp-key-already-revoked"


def test_staff_revokes_anyones_key(owner, staff, registered, api_as):
    key = registered(owner, "owner")
    assert api_as(staff).post(f"{KEYS}{key.fingerprint.lower()}/revoke/").status_code == 200
    key.refresh_from_db()
    assert key.revoked_by == staff


def test_an_outsider_cannot_revoke_and_sees_the_same_404_as_for_a_missing_key(owner, outsider, registered, api_as):
    key = registered(owner, "owner")
    client = api_as(outsider)
    forbidden = client.post(f"{KEYS}{key.fingerprint}/revoke/")
    missing = client.post(f"{KEYS}{'0' * 40}/revoke/")
    assert forbidden.status_code == missing.status_code == 404
    assert forbidden.json()["code"] == missing.json()["code"] == "not_found"
    key.refresh_from_db()
    assert key.revoked_at is None
    assert client.get(KEYS).json()["results"] == []  # and does not see it listed


def test_key_list_runs_a_fixed_number_of_queries(owner, registered, api_as, django_assert_num_queries):
    registered(owner, "owner")
    client = api_as(owner)
    with django_assert_num_queries(2):  # count, page
        client.get(KEYS)
