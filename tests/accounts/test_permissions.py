"""Permission matrix of every accounts endpoint: (method, URL, role) → status.

Roles: the suite's cast (tests/conftest.py) and ``anonymous``: ``outsider`` (signed in, in no project, owns
nothing); ``owner``, the manager of the shared project ``climate``, who also owns the SSH key and the token;
``member``, a plain member of it (reads the project and its members, may leave, changes nobody); ``staff``
(site administrator, not in the project)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from accounts.models import Project
from accounts.services import RegistrationInput, api_token_create, registration_submit, ssh_key_add
from tests.accounts.conftest import confirm_email, registration_body

pytestmark = pytest.mark.django_db


@dataclass
class World:
    users: dict
    project: Project
    key_id: int
    token_id: int
    registration_id: int


def _public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.fixture
def world(owner, member, outsider, staff, project) -> World:
    users = {"outsider": outsider, "member": member, "owner": owner, "staff": staff}
    key = ssh_key_add(actor=owner, name="laptop", public_key=_public_key())
    token, _secret = api_token_create(actor=owner, name="cli")
    registration = registration_submit(data=RegistrationInput(**registration_body()))  # type: ignore[arg-type]
    confirm_email(registration.pk)
    return World(users, project, key.pk, token.pk, registration.pk)


P = "/api/v1/accounts/projects/{project}/"
M = "/api/v1/accounts/projects/{project}/members/"
MEMBER = "/api/v1/accounts/projects/{project}/members/{member}/"
OWNER = "/api/v1/accounts/projects/{project}/members/{owner}/"
KEY = "/api/v1/accounts/ssh-keys/{key}/"
TOKEN = "/api/v1/accounts/tokens/{token}/"
REG = "/api/v1/admin/registrations/{registration}/"

NEW_REGISTRATION = {**registration_body(username="grace", email="grace@example.org")}

# (method, url, body, {role: status})
MATRIX = [
    ("post", "/api/v1/accounts/registrations/", NEW_REGISTRATION,
     {"anonymous": 201, "outsider": 201, "staff": 201}),
    ("post", "/api/v1/accounts/registrations/confirmation/", {"email": "ada@example.org"},
     {"anonymous": 202, "outsider": 202, "member": 202, "owner": 202, "staff": 202}),
    ("post", "/api/v1/accounts/me/email/", {"email": "new-address@example.org"},
     {"anonymous": 401, "outsider": 202, "member": 202, "owner": 202, "staff": 202}),
    ("get", "/api/v1/accounts/me/", None,
     {"anonymous": 401, "outsider": 200, "member": 200, "owner": 200, "staff": 200}),
    ("get", "/api/v1/accounts/projects/", None,
     {"anonymous": 401, "outsider": 200, "member": 200, "owner": 200, "staff": 200}),
    ("post", "/api/v1/accounts/projects/", {"name": "astro", "manager": "member"},
     {"anonymous": 401, "outsider": 403, "member": 403, "owner": 403, "staff": 201}),
    ("get", P, None,
     {"anonymous": 401, "outsider": 404, "member": 200, "owner": 200, "staff": 404}),
    ("get", M, None,
     {"anonymous": 401, "outsider": 404, "member": 200, "owner": 200, "staff": 404}),
    ("post", M, {"username": "outsider", "role": "member"},
     {"anonymous": 401, "outsider": 404, "member": 403, "owner": 201, "staff": 404}),
    ("get", MEMBER, None,
     {"anonymous": 401, "outsider": 404, "member": 200, "owner": 200, "staff": 404}),
    ("patch", MEMBER, {"role": "manager"},
     {"anonymous": 401, "outsider": 404, "member": 403, "owner": 200, "staff": 404}),
    ("delete", MEMBER, None,
     {"anonymous": 401, "outsider": 404, "member": 204, "owner": 204, "staff": 404}),
    ("patch", OWNER, {"role": "member"},
     {"anonymous": 401, "outsider": 404, "member": 403, "owner": 409, "staff": 404}),
    ("delete", OWNER, None,
     {"anonymous": 401, "outsider": 404, "member": 403, "owner": 409, "staff": 404}),
    ("get", "/api/v1/accounts/ssh-keys/", None,
     {"anonymous": 401, "outsider": 200, "member": 200, "owner": 200, "staff": 200}),
    ("post", "/api/v1/accounts/ssh-keys/", {"name": "new", "public_key": "GENERATED"},
     {"anonymous": 401, "outsider": 201, "member": 201, "owner": 201, "staff": 201}),
    ("get", KEY, None,
     {"anonymous": 401, "outsider": 404, "member": 404, "owner": 200, "staff": 404}),
    ("delete", KEY, None,
     {"anonymous": 401, "outsider": 404, "member": 404, "owner": 204, "staff": 404}),
    ("get", "/api/v1/accounts/tokens/", None,
     {"anonymous": 401, "outsider": 200, "member": 200, "owner": 200, "staff": 200}),
    ("post", "/api/v1/accounts/tokens/", {"name": "new"},
     {"anonymous": 401, "outsider": 201, "member": 201, "owner": 201, "staff": 201}),
    ("delete", TOKEN, None,
     {"anonymous": 401, "outsider": 404, "member": 404, "owner": 204, "staff": 404}),
    ("get", "/api/v1/admin/registrations/", None,
     {"anonymous": 401, "outsider": 403, "member": 403, "owner": 403, "staff": 200}),
    ("get", REG, None,
     {"anonymous": 401, "outsider": 403, "member": 403, "owner": 403, "staff": 200}),
    ("post", REG + "approve/", None,
     {"anonymous": 401, "outsider": 403, "member": 403, "owner": 403, "staff": 200}),
    ("post", REG + "reject/", {"reason": "no"},
     {"anonymous": 401, "outsider": 403, "member": 403, "owner": 403, "staff": 200}),
]  # fmt: skip

CASES = [
    pytest.param(method, url, body, role, expected, id=f"{method.upper()} {url} as {role}")
    for method, url, body, by_role in MATRIX
    for role, expected in by_role.items()
]


@pytest.mark.parametrize(("method", "url", "body", "role", "expected"), CASES)
def test_permission_matrix(api, world, method, url, body, role, expected):
    if role != "anonymous":
        api.force_authenticate(world.users[role])
    target = url.format(
        project=world.project.pk,
        member=world.users["member"].pk,
        owner=world.users["owner"].pk,
        key=world.key_id,
        token=world.token_id,
        registration=world.registration_id,
    )
    if body and body.get("public_key") == "GENERATED":
        body = {**body, "public_key": _public_key()}
    response = getattr(api, method)(target, body, format="json") if body else getattr(api, method)(target)
    assert response.status_code == expected, response.content


def test_the_matrix_covers_every_accounts_endpoint():
    import re

    from accounts.urls import api_urlpatterns

    in_matrix = {re.sub(r"\{\w+\}", "<>", url) for _m, url, _b, _r in MATRIX}
    routed = {"/api/v1/" + re.sub(r"<[^>]+>", "<>", str(p.pattern)) for p in api_urlpatterns}
    assert routed == in_matrix


def test_the_openapi_schema_documents_every_accounts_endpoint(api):
    import yaml

    paths = yaml.safe_load(api.get("/api/v1/schema/").content)["paths"]
    for path in [
        "/api/v1/accounts/registrations/",
        "/api/v1/accounts/me/",
        "/api/v1/accounts/me/email/",
        "/api/v1/accounts/registrations/confirmation/",
        "/api/v1/accounts/projects/{project_id}/members/{user_id}/",
        "/api/v1/accounts/ssh-keys/{key_id}/",
        "/api/v1/accounts/tokens/{token_id}/",
        "/api/v1/admin/registrations/{registration_id}/approve/",
    ]:
        assert path in paths
    assert paths["/api/v1/accounts/registrations/"]["post"].get("security", []) in ([], [{}])  # anonymous
    assert paths["/api/v1/accounts/me/"]["get"]["security"]
    assert paths["/api/v1/accounts/registrations/confirmation/"]["post"].get("security", []) in ([], [{}])
    assert "202" in paths["/api/v1/accounts/me/email/"]["post"]["responses"]
    approve = paths["/api/v1/admin/registrations/{registration_id}/approve/"]["post"]
    assert "email-unconfirmed" in approve["description"]
