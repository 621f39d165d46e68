"""Fixtures of the accounts tests: a real OpenLDAP ``slapd`` on a loopback port (one per session),
settings that point django-auth-ldap and accounts/directory.py at it, and helpers to read it."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ldap
import pytest

from portal.settings import ldap_auth_settings

SUFFIX = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "slapd-test-secret"
USERS_OU = f"ou=users,{SUFFIX}"
GROUPS_OU = f"ou=groups,{SUFFIX}"
ACCESS_GROUP = f"cn=altostratus-users,{GROUPS_OU}"
ADMIN_GROUP = f"cn=altostratus-admins,{GROUPS_OU}"
# groupOfNames needs at least one member; the directory's own admin stands in.
PLACEHOLDER_MEMBER = ADMIN_DN

SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
database mdb
maxsize 104857600
suffix "{suffix}"
rootdn "{admin_dn}"
rootpw {admin_password}
directory {dir}/db
access to attrs=userPassword
    by self write
    by anonymous auth
    by * none
access to *
    by * read
"""

BASE_LDIF = f"""\
dn: {SUFFIX}
objectClass: top
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: {USERS_OU}
objectClass: organizationalUnit
ou: users

dn: {GROUPS_OU}
objectClass: organizationalUnit
ou: groups

dn: {ACCESS_GROUP}
objectClass: groupOfNames
cn: altostratus-users
member: {PLACEHOLDER_MEMBER}

dn: {ADMIN_GROUP}
objectClass: groupOfNames
cn: altostratus-admins
member: {PLACEHOLDER_MEMBER}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Slapd:
    uri: str
    pidfile: Path

    def connect(self) -> ldap.ldapobject.LDAPObject:
        """A python-ldap connection bound as the directory's admin, for tests to look with."""
        conn = ldap.initialize(self.uri)
        conn.simple_bind_s(ADMIN_DN, ADMIN_PASSWORD)
        return conn


@pytest.fixture(scope="session")
def slapd(tmp_path_factory) -> Iterator[Slapd]:
    """A real slapd on a free loopback port with the base entries, users and groups OUs and groups."""
    if not shutil.which("slapd", path="/usr/sbin:/usr/bin"):
        pytest.fail("slapd is missing: `make install` installs Debian's slapd and ldap-utils")
    directory = tmp_path_factory.mktemp("slapd")
    (directory / "db").mkdir()
    conf = directory / "slapd.conf"
    conf.write_text(SLAPD_CONF.format(dir=directory, suffix=SUFFIX, admin_dn=ADMIN_DN, admin_password=ADMIN_PASSWORD))
    uri = f"ldap://127.0.0.1:{free_port()}/"
    subprocess.run(["/usr/sbin/slapd", "-f", str(conf), "-h", uri], check=True, capture_output=True)
    pidfile = directory / "slapd.pid"
    server = Slapd(uri=uri.rstrip("/"), pidfile=pidfile)
    deadline = time.monotonic() + 20
    while True:
        try:
            server.connect().unbind_s()
            break
        except ldap.SERVER_DOWN:
            if time.monotonic() > deadline:
                raise RuntimeError(f"slapd did not start on {uri}") from None
            time.sleep(0.1)
    (directory / "base.ldif").write_text(BASE_LDIF)
    subprocess.run(
        ["ldapadd", "-x", "-H", server.uri, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD, "-f", str(directory / "base.ldif")],
        check=True,
        capture_output=True,
    )
    try:
        yield server
    finally:
        pid = int(pidfile.read_text().strip())
        subprocess.run(["kill", "-TERM", str(pid)], check=False)
        deadline = time.monotonic() + 10
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if pidfile.exists():
            subprocess.run(["kill", f"-{signal.SIGKILL.value}", str(pid)], check=False)


def _reset_directory(server: Slapd) -> None:
    conn = server.connect()
    for dn, _attrs in conn.search_s(USERS_OU, ldap.SCOPE_ONELEVEL, "(objectClass=*)", ["dn"]):
        conn.delete_s(dn)
    for group in (ACCESS_GROUP, ADMIN_GROUP):
        conn.modify_s(group, [(ldap.MOD_REPLACE, "member", [PLACEHOLDER_MEMBER.encode()])])
    conn.unbind_s()


def apply_ldap_settings(settings, uri: str, *, access_group: str = ACCESS_GROUP) -> None:
    settings.AUTH_LDAP_BIND_DN = ADMIN_DN
    settings.AUTH_LDAP_BIND_PASSWORD = ADMIN_PASSWORD
    settings.AUTH_LDAP_USERS_OU = USERS_OU
    settings.AUTH_LDAP_ACCESS_GROUP = access_group
    settings.AUTH_LDAP_ADMIN_GROUP = ADMIN_GROUP
    settings.AUTH_LDAP_GROUP_TYPE_NAME = "groupOfNames"
    settings.AUTH_LDAP_TIMEOUT = 2
    for name, value in ldap_auth_settings(
        server_uri=uri,
        users_ou=USERS_OU,
        groups_ou=GROUPS_OU,
        access_group=access_group,
        admin_group=ADMIN_GROUP,
        group_type="groupOfNames",
        timeout=2,
    ).items():
        setattr(settings, name, value)
    settings.AUTHENTICATION_BACKENDS = [
        "accounts.backends.LDAPBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]


@pytest.fixture
def ldap_directory(slapd, settings) -> Iterator[Slapd]:
    """LDAP turned on for this test against the session's slapd; the users and group members it
    wrote are removed afterwards."""
    _reset_directory(slapd)
    apply_ldap_settings(settings, slapd.uri)
    yield slapd
    _reset_directory(slapd)


def ldap_entry(server: Slapd, uid: str) -> dict[str, list[str]] | None:
    conn = server.connect()
    try:
        results = conn.search_s(USERS_OU, ldap.SCOPE_ONELEVEL, f"(uid={uid})")
    finally:
        conn.unbind_s()
    if not results:
        return None
    _dn, attrs = results[0]
    return {name: [v.decode() for v in values] for name, values in attrs.items()}


def group_members(server: Slapd, group: str) -> set[str]:
    conn = server.connect()
    try:
        _dn, attrs = conn.search_s(group, ldap.SCOPE_BASE)[0]
    finally:
        conn.unbind_s()
    return {v.decode().lower() for v in attrs.get("member", [])}


REGISTRATION_PASSWORD = "Lunar-Orbit-Paper-42"


def registration_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "username": "ada_l",
        "email": "ada@example.org",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "password": REGISTRATION_PASSWORD,
        "dn": "",
        "message": "I compute Bernoulli numbers.",
        "accept_terms": True,
    }
    body.update(overrides)
    return body


def confirm_email(registration_id: int) -> None:
    """Confirm a request's address the way its mailed link does."""
    from accounts.models import RegistrationRequest
    from accounts.services import registration_confirmation_token, registration_email_confirm

    registration_email_confirm(
        token=registration_confirmation_token(RegistrationRequest.objects.get(pk=registration_id))
    )


@pytest.fixture
def register(api):
    """``register(confirmed=True, **overrides)``: POST a registration anonymously, return the response.
    With ``confirmed`` (the default) the applicant then confirms the address, as the mailed link does."""

    def post(*, confirmed: bool = True, **overrides: object):
        response = api.post("/api/v1/accounts/registrations/", registration_body(**overrides), format="json")
        if confirmed and response.status_code == 201:
            confirm_email(response.json()["id"])
        return response

    return post
