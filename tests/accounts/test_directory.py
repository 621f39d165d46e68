"""Approval into a real slapd, login through django-auth-ldap, and a directory that is down."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from accounts import directory
from accounts.models import Project, RegistrationRequest
from tests.accounts.conftest import (
    ACCESS_GROUP,
    ADMIN_GROUP,
    REGISTRATION_PASSWORD,
    USERS_OU,
    apply_ldap_settings,
    free_port,
    group_members,
    ldap_entry,
)

pytestmark = pytest.mark.django_db

DN = "CN=Ada Lovelace,O=Example,C=UK"


def _approve(api, staff, registration: RegistrationRequest):
    api.force_authenticate(staff)
    response = api.post(f"/api/v1/admin/registrations/{registration.pk}/approve/")
    api.force_authenticate(None)
    return response


def test_approval_writes_an_inetorgperson_with_an_ssha_password(ldap_directory, register, api, staff):
    register(dn=DN)
    response = _approve(api, staff, RegistrationRequest.objects.get())
    assert response.status_code == 200, response.json()
    entry = ldap_entry(ldap_directory, "ada_l")
    assert entry is not None
    assert set(entry["objectClass"]) >= {"inetOrgPerson", "organizationalPerson", "person"}
    assert entry["uid"] == ["ada_l"]
    assert entry["mail"] == ["ada@example.org"]
    assert entry["cn"] == ["Ada Lovelace"]
    assert entry["sn"] == ["Lovelace"]
    assert entry["givenName"] == ["Ada"]
    assert [v.lower() for v in entry["seeAlso"]] == [DN.lower()]  # slapd lower-cases attribute types
    [password] = entry["userPassword"]
    assert password.startswith("{SSHA}")
    assert directory.ssha_check(REGISTRATION_PASSWORD, password)
    assert not directory.ssha_check("another password", password)


def test_approval_adds_the_entry_to_the_access_group(ldap_directory, register, api, staff):
    register()
    _approve(api, staff, RegistrationRequest.objects.get())
    assert f"uid=ada_l,{USERS_OU}" in group_members(ldap_directory, ACCESS_GROUP)
    assert f"uid=ada_l,{USERS_OU}" not in group_members(ldap_directory, ADMIN_GROUP)


def test_approval_with_ldap_keeps_no_usable_local_password(ldap_directory, register, api, staff):
    register()
    _approve(api, staff, RegistrationRequest.objects.get())
    user = User.objects.get(username="ada_l")
    assert not user.has_usable_password()
    assert Project.objects.filter(personal_owner=user).exists()


def test_approved_user_logs_in_with_the_ldap_password(ldap_directory, register, api, staff, client):
    register()
    _approve(api, staff, RegistrationRequest.objects.get())
    response = client.post("/accounts/login/", {"username": "ada_l", "password": REGISTRATION_PASSWORD})
    assert response.status_code == 302
    assert client.get("/api/v1/accounts/me/").json()["user"]["username"] == "ada_l"
    bad = client.post("/accounts/login/", {"username": "ada_l", "password": "Wrong-Password-1"})
    assert bad.status_code == 200


def _add_person(server, uid: str, password: str, groups: list[str]) -> str:
    import ldap
    import ldap.modlist

    dn = f"uid={uid},{USERS_OU}"
    conn = server.connect()
    conn.add_s(
        dn,
        ldap.modlist.addModlist(
            {
                "objectClass": [b"inetOrgPerson"],
                "uid": [uid.encode()],
                "cn": [b"Someone Else"],
                "sn": [b"Else"],
                "givenName": [b"Someone"],
                "mail": [f"{uid}@example.org".encode()],
                "userPassword": [directory.ssha_hash(password).encode()],
            }
        ),
    )
    for group in groups:
        conn.modify_s(group, [(ldap.MOD_ADD, "member", [dn.encode()])])
    conn.unbind_s()
    return dn


def test_a_person_outside_the_access_group_cannot_log_in(ldap_directory, client):
    _add_person(ldap_directory, "stranger", "Stranger-Pass-77", groups=[])
    response = client.post("/accounts/login/", {"username": "stranger", "password": "Stranger-Pass-77"})
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    assert not User.objects.filter(username="stranger").exists()


def test_members_of_the_admin_group_log_in_as_staff(ldap_directory, client):
    _add_person(ldap_directory, "siteadmin", "Admin-Pass-77", groups=[ACCESS_GROUP, ADMIN_GROUP])
    _add_person(ldap_directory, "plainuser", "Plain-Pass-77", groups=[ACCESS_GROUP])
    assert client.post("/accounts/login/", {"username": "siteadmin", "password": "Admin-Pass-77"}).status_code == 302
    assert client.post("/accounts/login/", {"username": "plainuser", "password": "Plain-Pass-77"}).status_code == 302
    assert User.objects.get(username="siteadmin").is_staff
    assert not User.objects.get(username="plainuser").is_staff
    assert User.objects.get(username="plainuser").email == "plainuser@example.org"  # from the entry


def test_a_directory_that_is_down_gives_503_and_leaves_the_request_pending(
    slapd, settings, register, api, staff, django_capture_on_commit_callbacks
):
    apply_ldap_settings(settings, f"ldap://127.0.0.1:{free_port()}")  # nothing listens there
    register()
    registration = RegistrationRequest.objects.get()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = _approve(api, staff, registration)
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "directory-unavailable"
    assert "unavailable" in body["detail"] and "pending" in body["detail"]
    registration.refresh_from_db()
    assert registration.status == "pending"
    assert registration.password_hash and registration.ldap_password_hash  # still there for a retry
    assert not User.objects.filter(username="ada_l").exists()
    assert not Project.objects.filter(name="personal-ada_l").exists()
    assert callbacks == []  # no "account ready" e-mail
    assert ldap_entry(slapd, "ada_l") is None


def test_after_the_directory_is_back_the_same_request_is_approved(ldap_directory, settings, register, api, staff):
    register()
    registration = RegistrationRequest.objects.get()
    good_uri = settings.AUTH_LDAP_SERVER_URI
    apply_ldap_settings(settings, f"ldap://127.0.0.1:{free_port()}")
    assert _approve(api, staff, registration).status_code == 503
    apply_ldap_settings(settings, good_uri)
    assert _approve(api, staff, registration).status_code == 200
    assert ldap_entry(ldap_directory, "ada_l") is not None


def test_a_failed_group_membership_removes_the_new_entry_again(ldap_directory, settings, register, api, staff):
    # A real refusal by slapd: the configured access group does not exist.
    apply_ldap_settings(settings, ldap_directory.uri, access_group=f"cn=no-such-group,{USERS_OU}")
    register()
    registration = RegistrationRequest.objects.get()
    response = _approve(api, staff, registration)
    assert response.status_code == 503
    assert response.json()["code"] == "directory-error"
    assert ldap_entry(ldap_directory, "ada_l") is None
    registration.refresh_from_db()
    assert registration.status == "pending"
    assert not User.objects.filter(username="ada_l").exists()


def test_an_entry_someone_else_made_is_not_overwritten(ldap_directory, register, api, staff):
    _add_person(ldap_directory, "ada_l", "Other-Pass-77", groups=[])
    register()
    registration = RegistrationRequest.objects.get()
    response = _approve(api, staff, registration)
    assert response.status_code == 409
    assert response.json()["code"] == "directory-entry-exists"
    assert directory.ssha_check("Other-Pass-77", ldap_entry(ldap_directory, "ada_l")["userPassword"][0])
    registration.refresh_from_db()
    assert registration.status == "pending"


def test_a_directory_that_accepts_but_never_answers_says_it_timed_out(slapd, settings, register, api, staff):
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever reads or writes
        apply_ldap_settings(settings, f"ldap://127.0.0.1:{silent.getsockname()[1]}")
        settings.AUTH_LDAP_TIMEOUT = 1
        register()
        response = _approve(api, staff, RegistrationRequest.objects.get())
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "directory-unavailable"
    assert "does not answer: timed out after 1 s" in body["detail"]
    assert RegistrationRequest.objects.get().status == "pending"


# --- the access group decides, within AUTH_LDAP_SYNC_SECONDS ----------------------------------------


def _remove_from_group(server, uid: str, group: str = ACCESS_GROUP) -> None:
    import ldap

    conn = server.connect()
    conn.modify_s(group, [(ldap.MOD_DELETE, "member", [f"uid={uid},{USERS_OU}".encode()])])
    conn.unbind_s()


def _put_back_in_group(server, uid: str, group: str = ACCESS_GROUP) -> None:
    import ldap

    conn = server.connect()
    conn.modify_s(group, [(ldap.MOD_ADD, "member", [f"uid={uid},{USERS_OU}".encode()])])
    conn.unbind_s()


def test_leaving_the_access_group_ends_the_sessions_and_tokens_at_the_next_sync(ldap_directory, client, api):
    from knox.models import AuthToken

    from accounts.tasks import directory_sync
    from core.models import AuditEntry

    _add_person(ldap_directory, "leaver", "Leaver-Pass-77", groups=[ACCESS_GROUP])
    _add_person(ldap_directory, "stayer", "Stayer-Pass-77", groups=[ACCESS_GROUP])
    assert client.login(username="leaver", password="Leaver-Pass-77")
    secret = client.post("/api/v1/accounts/tokens/", {"name": "cli"}).json()["token"]
    api.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    newer = api.post("/api/v1/accounts/tokens/", {"name": "minted"}).json()["token"]  # the token mints another
    stayer = type(client)()
    assert stayer.login(username="stayer", password="Stayer-Pass-77")

    _remove_from_group(ldap_directory, "leaver")
    assert directory_sync() == ["leaver"]

    assert api.get("/api/v1/accounts/me/").status_code == 401
    api.credentials(HTTP_AUTHORIZATION=f"Token {newer}")
    assert api.get("/api/v1/accounts/me/").status_code == 401
    assert client.get("/api/v1/accounts/me/").status_code == 401  # the session is logged out
    assert client.get("/accounts/profile/").status_code == 302
    user = User.objects.get(username="leaver")
    assert not user.is_active and not AuthToken.objects.filter(user=user).exists()
    assert AuditEntry.objects.filter(action="accounts.user.deactivated", object_id=str(user.pk)).count() == 1
    assert stayer.get("/api/v1/accounts/me/").status_code == 200  # the others are untouched
    assert directory_sync() == []  # running it again changes nothing


def test_someone_put_back_in_the_access_group_logs_in_again(ldap_directory, client):
    from accounts.tasks import directory_sync

    _add_person(ldap_directory, "returner", "Return-Pass-77", groups=[ACCESS_GROUP])
    assert client.login(username="returner", password="Return-Pass-77")
    _remove_from_group(ldap_directory, "returner")
    directory_sync()
    assert not client.login(username="returner", password="Return-Pass-77")
    _put_back_in_group(ldap_directory, "returner")
    response = client.post("/accounts/login/", {"username": "returner", "password": "Return-Pass-77"})
    assert response.status_code == 302
    assert User.objects.get(username="returner").is_active
    assert client.get("/api/v1/accounts/me/").status_code == 200


def test_local_accounts_are_not_touched_by_the_sync(ldap_directory, owner):
    from accounts.tasks import directory_sync

    assert directory_sync() == []
    owner.refresh_from_db()
    assert owner.is_active and owner.has_usable_password()


def test_a_directory_that_cannot_be_read_deactivates_nobody(slapd, settings):
    from accounts.services import directory_users_sync
    from core.errors import Unavailable
    from tests.factories import UserFactory

    apply_ldap_settings(settings, f"ldap://127.0.0.1:{free_port()}")
    user = UserFactory(username="someone")
    user.set_unusable_password()
    user.save()
    with pytest.raises(Unavailable):
        directory_users_sync()
    user.refresh_from_db()
    assert user.is_active


def _directory_user(username: str) -> User:
    from tests.factories import UserFactory

    user = UserFactory(username=username)
    user.set_unusable_password()
    user.save()
    return user


def test_a_directory_outage_during_the_sync_is_transient_retried_and_changes_nothing(slapd, settings):
    from unittest import mock

    from accounts.tasks import SYNC_RETRIES, directory_sync
    from core.errors import TransientError
    from core.models import AuditEntry

    apply_ldap_settings(settings, f"ldap://127.0.0.1:{free_port()}")  # nothing listens there
    user = _directory_user("someone")
    real = directory.access_group_uids
    with mock.patch.object(directory, "access_group_uids", autospec=True, side_effect=real) as read:
        run = directory_sync.apply()
    assert run.failed()
    assert isinstance(run.result, directory.DirectoryUnavailable)
    assert isinstance(run.result, TransientError)
    assert read.call_count == 1 + SYNC_RETRIES  # asked again, up to the task's bound
    user.refresh_from_db()
    assert user.is_active
    assert not AuditEntry.objects.filter(action="accounts.user.deactivated").exists()


def test_a_directory_that_refuses_fails_the_sync_at_once_and_changes_nothing(ldap_directory, settings):
    from unittest import mock

    from accounts.tasks import directory_sync
    from core.errors import PermanentError

    # A real refusal by slapd: the configured access group does not exist.
    apply_ldap_settings(settings, ldap_directory.uri, access_group=f"cn=no-such-group,{USERS_OU}")
    user = _directory_user("someone")
    real = directory.access_group_uids
    with mock.patch.object(directory, "access_group_uids", autospec=True, side_effect=real) as read:
        run = directory_sync.apply()
    assert run.failed()
    assert isinstance(run.result, directory.DirectoryError)
    assert isinstance(run.result, PermanentError)
    assert read.call_count == 1
    user.refresh_from_db()
    assert user.is_active


def test_the_sync_runs_on_the_beat_every_auth_ldap_sync_seconds(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["accounts.directory_sync"]
    assert entry["task"] == "accounts.directory_sync"
    assert entry["schedule"] == float(settings.AUTH_LDAP_SYNC_SECONDS) == 60.0


# --- first login, change of address -----------------------------------------------------------------


def test_a_first_login_through_the_directory_gets_a_personal_project(ldap_directory, client):
    _add_person(ldap_directory, "newcomer", "Newcomer-Pass-77", groups=[ACCESS_GROUP])
    assert client.post("/accounts/login/", {"username": "newcomer", "password": "Newcomer-Pass-77"}).status_code == 302
    [project] = client.get("/api/v1/accounts/me/").json()["projects"]
    assert (project["name"], project["role"], project["personal"]) == ("personal-newcomer", "manager", True)
    client.logout()
    assert client.login(username="newcomer", password="Newcomer-Pass-77")  # a second login makes no second one
    assert Project.objects.filter(personal_owner__username="newcomer").count() == 1


def test_a_directory_user_changing_address_changes_the_directory_mail_too(
    ldap_directory, register, api, staff, client, django_capture_on_commit_callbacks
):
    import re

    from django.core import mail

    register()
    _approve(api, staff, RegistrationRequest.objects.get())
    user = User.objects.get(username="ada_l")
    api.force_authenticate(user)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/api/v1/accounts/me/email/", {"email": "ada@new.example.org"}).status_code == 202
    link = re.search(r"http://127\.0\.0\.1:8000(/accounts/profile/email/confirm/\S+/)", mail.outbox[0].body).group(1)
    assert client.post(link).status_code == 200
    assert ldap_entry(ldap_directory, "ada_l")["mail"] == ["ada@new.example.org"]
    # A login copies the directory's mail into the account: it stays the confirmed one.
    assert client.login(username="ada_l", password=REGISTRATION_PASSWORD)
    assert User.objects.get(username="ada_l").email == "ada@new.example.org"
