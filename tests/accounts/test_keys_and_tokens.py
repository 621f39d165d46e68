"""SSH public keys (parsed, not matched) and knox API tokens (hashed, shown once, expiring, revocable)."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess

import pytest
import time_machine
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from knox.models import AuthToken

from accounts.models import ApiToken, SshKey
from core.models import AuditEntry
from tests.factories import TEST_PASSWORD

pytestmark = pytest.mark.django_db


def openssh_public(key, comment: str = "ada@laptop") -> str:
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}"


def ssh_keygen_fingerprint(public_line: str, tmp_path) -> str:
    path = tmp_path / "key.pub"
    path.write_text(public_line + "\n")
    output = subprocess.run(["ssh-keygen", "-l", "-f", str(path)], capture_output=True, text=True, check=True).stdout
    return output.split()[1]


@pytest.mark.parametrize(
    "make_key",
    [
        ed25519.Ed25519PrivateKey.generate,
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        lambda: ec.generate_private_key(ec.SECP256R1()),
    ],
    ids=["ed25519", "rsa-2048", "ecdsa-p256"],
)
def test_good_keys_are_stored_with_the_fingerprint_ssh_keygen_prints(api_as, owner, tmp_path, make_key):
    line = openssh_public(make_key())
    response = api_as(owner).post("/api/v1/accounts/ssh-keys/", {"name": "laptop", "public_key": line})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["fingerprint"] == ssh_keygen_fingerprint(line, tmp_path)
    assert body["public_key"] == line
    assert SshKey.objects.get(user=owner).name == "laptop"


def test_a_key_without_a_name_is_named_by_its_comment(api_as, owner):
    line = openssh_public(ed25519.Ed25519PrivateKey.generate(), comment="ada@workstation")
    assert api_as(owner).post("/api/v1/accounts/ssh-keys/", {"public_key": line}).json()["name"] == "ada@workstation"


@pytest.mark.parametrize(
    ("public_key", "words"),
    [
        ("ssh-ed25519 AAAAnot-base64!!", "not an OpenSSH public key"),
        ("hello world", "OpenSSH public key"),
        ("ssh-ed25519 " + "QUFBQQ==", "not an OpenSSH public key"),
        ("", "blank"),
    ],
)
def test_junk_is_refused(api_as, owner, public_key, words):
    response = api_as(owner).post("/api/v1/accounts/ssh-keys/", {"name": "junk", "public_key": public_key})
    assert response.status_code == 400
    assert words.lower() in response.json()["detail"].lower()
    assert response.json()["detail"].startswith("public_key: ") or response.json()["code"] == "invalid-ssh-key"
    assert not SshKey.objects.exists()


def test_a_private_key_is_refused_with_advice(api_as, owner):
    private = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
        .decode()
    )
    response = api_as(owner).post("/api/v1/accounts/ssh-keys/", {"name": "oops", "public_key": private})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid-ssh-key"
    assert "private key" in response.json()["detail"]
    assert not SshKey.objects.exists()


def test_a_short_rsa_key_is_refused(api_as, owner):
    weak = openssh_public(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505 - the weak key is the point
    response = api_as(owner).post("/api/v1/accounts/ssh-keys/", {"name": "old", "public_key": weak})
    assert response.status_code == 400
    assert "at least 2048 bits" in response.json()["detail"]


def test_the_same_key_or_name_twice_is_a_conflict(api_as, owner):
    line = openssh_public(ed25519.Ed25519PrivateKey.generate())
    client = api_as(owner)
    assert client.post("/api/v1/accounts/ssh-keys/", {"name": "a", "public_key": line}).status_code == 201
    again = client.post("/api/v1/accounts/ssh-keys/", {"name": "b", "public_key": line})
    assert again.status_code == 409 and again.json()["code"] == "ssh-key-exists"
    other = openssh_public(ed25519.Ed25519PrivateKey.generate())
    assert client.post("/api/v1/accounts/ssh-keys/", {"name": "a", "public_key": other}).status_code == 409


def test_the_same_key_may_belong_to_two_users(api_as, owner, outsider):
    line = openssh_public(ed25519.Ed25519PrivateKey.generate())
    assert api_as(owner).post("/api/v1/accounts/ssh-keys/", {"name": "k", "public_key": line}).status_code == 201
    assert api_as(outsider).post("/api/v1/accounts/ssh-keys/", {"name": "k", "public_key": line}).status_code == 201


def test_users_list_and_delete_only_their_own_keys(api_as, owner, outsider):
    line = openssh_public(ed25519.Ed25519PrivateKey.generate())
    key_id = api_as(owner).post("/api/v1/accounts/ssh-keys/", {"name": "k", "public_key": line}).json()["id"]
    other = api_as(outsider)
    assert other.get("/api/v1/accounts/ssh-keys/").json()["results"] == []
    assert other.delete(f"/api/v1/accounts/ssh-keys/{key_id}/").status_code == 404
    mine = api_as(owner)
    assert [k["id"] for k in mine.get("/api/v1/accounts/ssh-keys/").json()["results"]] == [key_id]
    assert mine.delete(f"/api/v1/accounts/ssh-keys/{key_id}/").status_code == 204
    assert not SshKey.objects.exists()
    assert AuditEntry.objects.filter(action="accounts.ssh_key.deleted").count() == 1


# --- tokens -----------------------------------------------------------------------------------------


def test_a_created_token_is_shown_once_and_stored_hashed(api_as, owner):
    response = api_as(owner).post("/api/v1/accounts/tokens/", {"name": "laptop", "expires_in_days": 30})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "name", "token", "expires"}
    assert response["Cache-Control"] == "no-store"
    secret = body["token"]
    stored = AuthToken.objects.get(user=owner)
    assert secret not in (stored.digest, stored.token_key) and stored.token_key == secret[:15]
    listed = api_as(owner).get("/api/v1/accounts/tokens/").json()["results"]
    assert [t["name"] for t in listed] == ["laptop"]
    assert secret not in str(listed)
    assert dt.datetime.fromisoformat(body["expires"]) - stored.created > dt.timedelta(days=29, hours=23)


def test_a_token_authenticates_api_calls_and_can_create_another(api, owner):
    api.force_authenticate(owner)
    secret = api.post("/api/v1/accounts/tokens/", {"name": "script"}).json()["token"]
    api.force_authenticate(None)
    api.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    assert api.get("/api/v1/accounts/me/").json()["user"]["username"] == "owner"
    second = api.post("/api/v1/accounts/tokens/", {"name": "from-token"})
    assert second.status_code == 201
    assert second.json()["expires"] is None


def test_an_expired_token_is_refused(api, owner):
    api.force_authenticate(owner)
    secret = api.post("/api/v1/accounts/tokens/", {"name": "short", "expires_in_days": 1}).json()["token"]
    api.force_authenticate(None)
    api.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    with time_machine.travel(dt.datetime.now(tz=dt.UTC) + dt.timedelta(hours=23)):
        assert api.get("/api/v1/accounts/me/").status_code == 200
    with time_machine.travel(dt.datetime.now(tz=dt.UTC) + dt.timedelta(days=1, minutes=1)):
        assert api.get("/api/v1/accounts/me/").status_code == 401
    assert not AuthToken.objects.filter(user=owner).exists()


def test_a_revoked_token_stops_working_at_once(api, owner):
    api.force_authenticate(owner)
    created = api.post("/api/v1/accounts/tokens/", {"name": "ci"}).json()
    api.force_authenticate(None)
    api.credentials(HTTP_AUTHORIZATION=f"Token {created['token']}")
    assert api.get("/api/v1/accounts/me/").status_code == 200
    assert api.delete(f"/api/v1/accounts/tokens/{created['id']}/").status_code == 204
    assert api.get("/api/v1/accounts/me/").status_code == 401
    assert not ApiToken.objects.exists() and not AuthToken.objects.exists()
    assert AuditEntry.objects.filter(action="accounts.api_token.revoked").count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x", "expires_in_days": 0}, "expires_in_days"),
        ({"name": "x", "expires_in_days": 100000}, "expires_in_days"),
    ],
)
def test_bad_token_requests_are_refused(api_as, owner, body, field):
    response = api_as(owner).post("/api/v1/accounts/tokens/", body)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{field}: ")
    assert not AuthToken.objects.exists()


def test_users_cannot_revoke_tokens_of_others(api_as, owner, outsider):
    token_id = api_as(owner).post("/api/v1/accounts/tokens/", {"name": "mine"}).json()["id"]
    assert api_as(outsider).delete(f"/api/v1/accounts/tokens/{token_id}/").status_code == 404
    assert ApiToken.objects.filter(pk=token_id).exists()


# --- profile page -----------------------------------------------------------------------------------


def test_profile_page_adds_and_deletes_keys_and_shows_a_new_token_once(client, owner):
    client.force_login(owner)
    line = openssh_public(ed25519.Ed25519PrivateKey.generate())
    response = client.post("/accounts/profile/ssh-keys/", {"name": "laptop", "public_key": line}, follow=True)
    assert b"SSH key laptop added" in response.content
    bad = client.post("/accounts/profile/ssh-keys/", {"name": "junk", "public_key": "junk"})
    assert bad.status_code == 400 and b"not an OpenSSH public key" in bad.content
    created = client.post("/accounts/profile/tokens/", {"name": "cli", "expires_in_days": "7"})
    record = ApiToken.objects.get(user=owner)
    html = created.content.decode()
    assert "Copy it now" in html
    prefix = record.token.token_key
    assert f'<code class="token">{prefix}' in html
    assert f'<code class="token">{prefix}' not in client.get("/accounts/profile/").content.decode()
    client.post(f"/accounts/profile/tokens/{record.pk}/revoke/")
    client.post(f"/accounts/profile/ssh-keys/{SshKey.objects.get().pk}/delete/")
    assert not ApiToken.objects.exists() and not SshKey.objects.exists()


def test_profile_actions_on_other_users_objects_are_404(client, owner, outsider):
    client.force_login(owner)
    line = openssh_public(ed25519.Ed25519PrivateKey.generate())
    client.post("/accounts/profile/ssh-keys/", {"name": "laptop", "public_key": line})
    key = SshKey.objects.get()
    client.force_login(outsider)
    assert client.post(f"/accounts/profile/ssh-keys/{key.pk}/delete/").status_code == 404
    assert SshKey.objects.exists()


# --- a token may not outlive the credential that made it --------------------------------------------


def _token_client(api, owner, **body):
    api.force_authenticate(owner)
    created = api.post("/api/v1/accounts/tokens/", {"name": "parent", **body}).json()
    api.force_authenticate(None)
    api.credentials(HTTP_AUTHORIZATION=f"Token {created['token']}")
    return created


@pytest.mark.parametrize("body", [{"expires_in_days": None}, {"expires_in_days": 30}])
def test_a_token_cannot_outlive_the_token_that_creates_it(api, owner, body):
    parent = _token_client(api, owner, expires_in_days=7)
    response = api.post("/api/v1/accounts/tokens/", {"name": "child", **body}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "token-outlives-credential"
    expiry = AuthToken.objects.get(token_key=parent["token"][:15]).expiry
    assert expiry.strftime("%Y-%m-%dT%H:%M:%SZ") in response.json()["detail"]
    assert AuthToken.objects.filter(user=owner).count() == 1


def test_a_token_made_by_an_expiring_token_without_an_expiry_gets_the_same_expiry(api, owner):
    parent = _token_client(api, owner, expires_in_days=7)
    child = api.post("/api/v1/accounts/tokens/", {"name": "child"}, format="json")
    assert child.status_code == 201
    assert child.json()["expires"] == parent["expires"]
    shorter = api.post("/api/v1/accounts/tokens/", {"name": "short", "expires_in_days": 3}, format="json")
    assert shorter.status_code == 201


def test_a_token_made_in_a_session_may_still_never_expire(api_as, owner):
    response = api_as(owner).post(
        "/api/v1/accounts/tokens/", {"name": "forever", "expires_in_days": None}, format="json"
    )
    assert response.status_code == 201 and response.json()["expires"] is None


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def test_a_username_and_password_create_a_token_and_nothing_else(api, owner):
    api.credentials(HTTP_AUTHORIZATION=_basic("owner", TEST_PASSWORD))
    made = api.post("/api/v1/accounts/tokens/", {"name": "alto on laptop", "expires_in_days": 30}, format="json")
    assert made.status_code == 201, made.json()
    assert made["Cache-Control"] == "no-store"
    # The password opens no other door, not even the token list.
    assert api.get("/api/v1/accounts/tokens/").status_code == 401
    assert api.get("/api/v1/accounts/me/").status_code == 401
    api.credentials(HTTP_AUTHORIZATION=f"Token {made.json()['token']}")
    assert api.get("/api/v1/accounts/me/").json()["user"]["username"] == "owner"
    assert AuditEntry.objects.filter(action="accounts.api_token.created", actor=owner).exists()


def test_a_wrong_password_creates_no_token_and_counts_towards_the_login_lockout(api, owner):
    api.credentials(HTTP_AUTHORIZATION=_basic("owner", "wrong"))
    refused = api.post("/api/v1/accounts/tokens/", {"name": "guess"}, format="json")
    assert refused.status_code == 401
    assert refused.json()["code"] == "login-failed"
    for n in range(3):
        api.credentials(HTTP_AUTHORIZATION=_basic("owner", f"wrong-{n}"))
        api.post("/api/v1/accounts/tokens/", {"name": "guess"}, format="json")
    api.credentials(HTTP_AUTHORIZATION=_basic("owner", "wrong-last"))
    locked = api.post("/api/v1/accounts/tokens/", {"name": "guess"}, format="json")
    assert locked.status_code == 429  # the fifth failure, as on the login page
    api.credentials(HTTP_AUTHORIZATION=_basic("owner", TEST_PASSWORD))
    still = api.post("/api/v1/accounts/tokens/", {"name": "right"}, format="json")
    assert still.status_code == 429
    assert still.json()["code"] == "locked-out"
    assert still["Retry-After"] == "900"
    assert not ApiToken.objects.filter(user=owner).exists()
