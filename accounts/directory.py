"""The LDAP directory writer: the only module that imports ``ldap``.

Approved users become ``inetOrgPerson`` entries under ``AUTH_LDAP_USERS_OU`` and members of
``AUTH_LDAP_ACCESS_GROUP``; django-auth-ldap then authenticates them (see the ``# accounts`` block of
the settings). Every call opens its own short connection bound as ``AUTH_LDAP_BIND_DN``. Failures come out
in the house's two kinds (``core.errors``), both a :class:`DirectoryFailure`: a directory that does not answer
raises :class:`DirectoryUnavailable` (transient: asking again may help), a refusal :class:`DirectoryError`
(permanent) or its :class:`DirectoryEntryExists`; ``ldap.LDAPError`` never leaves this module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import ldap
import ldap.dn
import ldap.modlist
from django.conf import settings

from core.errors import AdapterError, PermanentError, TransientError

logger = logging.getLogger(__name__)


class DirectoryFailure(AdapterError):
    """The directory failed: either kind below (callers that treat both alike catch this one)."""


class DirectoryError(DirectoryFailure, PermanentError):
    """The directory refused an operation (bad configuration, schema violation, missing group…)."""


class DirectoryUnavailable(DirectoryFailure, TransientError):
    """The directory did not answer (down, unreachable, timed out). Nothing was written."""


class DirectoryEntryExists(DirectoryError):
    """An entry with this ``uid`` is already in the directory."""


@dataclass(frozen=True)
class DirectoryPerson:
    uid: str
    dn: str
    mail: str
    cn: str
    sn: str
    given_name: str
    see_also: tuple[str, ...]
    in_access_group: bool


@dataclass(frozen=True)
class _Config:
    uri: str
    bind_dn: str
    bind_password: str
    users_ou: str
    access_group: str
    member_attribute: str
    timeout: int


_UNAVAILABLE = (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.CONNECT_ERROR, ldap.UNAVAILABLE, ldap.BUSY)


def is_configured() -> bool:
    """True when approvals write to LDAP (``AUTH_LDAP_SERVER_URI`` is set)."""
    return bool(settings.AUTH_LDAP_SERVER_URI)


def _config() -> _Config:
    group_type = getattr(settings, "AUTH_LDAP_GROUP_TYPE_NAME", "groupOfNames")
    return _Config(
        uri=settings.AUTH_LDAP_SERVER_URI,
        bind_dn=settings.AUTH_LDAP_BIND_DN,
        bind_password=settings.AUTH_LDAP_BIND_PASSWORD,
        users_ou=settings.AUTH_LDAP_USERS_OU,
        access_group=settings.AUTH_LDAP_ACCESS_GROUP,
        member_attribute="uniqueMember" if group_type == "groupOfUniqueNames" else "member",
        timeout=getattr(settings, "AUTH_LDAP_TIMEOUT", 5),
    )


def ssha_hash(password: str) -> str:
    """The RFC 2307 ``{SSHA}`` hash OpenLDAP checks binds against: base64(SHA-1(password + salt) + salt)."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()  # noqa: S324 - {SSHA} is what slapd verifies
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def ssha_check(password: str, hashed: str) -> bool:
    """True when ``hashed`` (``{SSHA}…``) was made from ``password``."""
    if not hashed.startswith("{SSHA}"):
        return False
    try:
        raw = base64.b64decode(hashed[len("{SSHA}") :], validate=True)
    except ValueError:
        return False
    digest, salt = raw[:20], raw[20:]
    return hmac.compare_digest(hashlib.sha1(password.encode() + salt).digest(), digest)  # noqa: S324


def person_dn(uid: str) -> str:
    return f"uid={ldap.dn.escape_dn_chars(uid)},{_config().users_ou}"


@contextmanager
def _connection(config: _Config) -> Iterator[ldap.ldapobject.LDAPObject]:
    try:
        conn = ldap.initialize(config.uri)
        conn.protocol_version = ldap.VERSION3
        conn.set_option(ldap.OPT_REFERRALS, 0)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, config.timeout)
        conn.set_option(ldap.OPT_TIMEOUT, config.timeout)
        if config.bind_dn:
            conn.simple_bind_s(config.bind_dn, config.bind_password)
    except _UNAVAILABLE as exc:
        raise DirectoryUnavailable(
            f"the directory at {config.uri} does not answer: {_describe(exc, config=config)}"
        ) from exc
    except ldap.LDAPError as exc:
        raise DirectoryError(f"cannot bind to the directory as {config.bind_dn}: {_describe(exc)}") from exc
    try:
        yield conn
    except _UNAVAILABLE as exc:
        raise DirectoryUnavailable(
            f"the directory at {config.uri} stopped answering: {_describe(exc, config=config)}"
        ) from exc
    except ldap.ALREADY_EXISTS as exc:
        raise DirectoryEntryExists(_describe(exc)) from exc
    except ldap.LDAPError as exc:
        raise DirectoryError(_describe(exc)) from exc
    finally:
        with suppress(ldap.LDAPError):  # the connection is gone either way
            conn.unbind_s()


def _describe(exc: ldap.LDAPError, *, config: _Config | None = None) -> str:
    # python-ldap raises a synchronous call's timeout as ``ldap.TIMEOUT()`` with no arguments at all.
    if isinstance(exc, ldap.TIMEOUT) and config is not None:
        return f"timed out after {config.timeout} s"
    info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    text = info.get("desc") or str(exc) or type(exc).__name__
    return f"{text} ({info['info']})" if info.get("info") else str(text)


def person_create(
    *, uid: str, mail: str, given_name: str, family_name: str, password_ssha: str, x509_dn: str = ""
) -> DirectoryPerson:
    """Write an ``inetOrgPerson`` for ``uid`` and add it to the access group, or write nothing.

    If adding to the group fails the new entry is deleted again, so the directory never keeps a person
    who cannot log in."""
    if not password_ssha.startswith("{SSHA}"):
        raise ValueError("password_ssha must be an {SSHA} hash")
    config = _config()
    dn = person_dn(uid)
    attributes: dict[str, list[bytes]] = {
        "objectClass": [b"top", b"person", b"organizationalPerson", b"inetOrgPerson"],
        "uid": [uid.encode()],
        "mail": [mail.encode()],
        "cn": [f"{given_name} {family_name}".encode()],
        "sn": [family_name.encode()],
        "givenName": [given_name.encode()],
        "userPassword": [password_ssha.encode()],
    }
    if x509_dn:
        attributes["seeAlso"] = [x509_dn.encode()]
    with _connection(config) as conn:
        try:
            conn.add_s(dn, ldap.modlist.addModlist(attributes))
        except ldap.ALREADY_EXISTS:
            # A retry after a fault may find the entry it wrote itself: the salted hash is unique to
            # this request, so an entry holding it is ours to finish; anything else is someone else's.
            if not _holds_password(conn, dn, password_ssha):
                raise
        try:
            if config.access_group:
                conn.modify_s(config.access_group, [(ldap.MOD_ADD, config.member_attribute, [dn.encode()])])
        except ldap.TYPE_OR_VALUE_EXISTS:
            pass
        except ldap.LDAPError:
            _delete_quietly(conn, dn)
            raise
    person = person_get(uid)
    if person is None:  # pragma: no cover - only if someone deleted it in between
        raise DirectoryError(f"the entry {dn} vanished right after it was written")
    return person


def _holds_password(conn: ldap.ldapobject.LDAPObject, dn: str, password_ssha: str) -> bool:
    results = conn.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", ["userPassword"])
    return password_ssha.encode() in (results[0][1].get("userPassword") or [])


def _delete_quietly(conn: ldap.ldapobject.LDAPObject, dn: str) -> None:
    try:
        conn.delete_s(dn)
    except ldap.NO_SUCH_OBJECT:
        pass
    except ldap.LDAPError:
        # The entry stays without group membership, so it cannot log in; approving again adopts it.
        logger.exception("could not delete %s after a failed approval", dn)


def person_get(uid: str) -> DirectoryPerson | None:
    """The entry for ``uid`` as the directory holds it now, or None."""
    config = _config()
    dn = person_dn(uid)
    with _connection(config) as conn:
        try:
            results = conn.search_s(dn, ldap.SCOPE_BASE, "(objectClass=inetOrgPerson)")
        except ldap.NO_SUCH_OBJECT:
            return None
        _found_dn, attrs = results[0]
        in_group = False
        if config.access_group:
            try:
                in_group = bool(conn.compare_s(config.access_group, config.member_attribute, dn.encode()))
            except ldap.NO_SUCH_OBJECT:
                in_group = False

    def first(name: str) -> str:
        values = attrs.get(name) or [b""]
        return values[0].decode()

    return DirectoryPerson(
        uid=first("uid"),
        dn=dn,
        mail=first("mail"),
        cn=first("cn"),
        sn=first("sn"),
        given_name=first("givenName"),
        see_also=tuple(v.decode() for v in attrs.get("seeAlso", [])),
        in_access_group=in_group,
    )


def person_delete(uid: str) -> None:
    """Remove ``uid`` from the access group and delete its entry (used to undo an approval)."""
    config = _config()
    dn = person_dn(uid)
    with _connection(config) as conn:
        if config.access_group:
            with suppress(ldap.NO_SUCH_ATTRIBUTE, ldap.NO_SUCH_OBJECT):
                conn.modify_s(config.access_group, [(ldap.MOD_DELETE, config.member_attribute, [dn.encode()])])
        _delete_quietly(conn, dn)


def person_set_password(uid: str, *, password_ssha: str) -> None:
    """Replace the ``userPassword`` of ``uid`` (password reset)."""
    if not password_ssha.startswith("{SSHA}"):
        raise ValueError("password_ssha must be an {SSHA} hash")
    config = _config()
    with _connection(config) as conn:
        conn.modify_s(person_dn(uid), [(ldap.MOD_REPLACE, "userPassword", [password_ssha.encode()])])


def person_set_mail(uid: str, *, mail: str) -> None:
    """Replace the ``mail`` of ``uid`` (a confirmed change of e-mail address)."""
    config = _config()
    with _connection(config) as conn:
        conn.modify_s(person_dn(uid), [(ldap.MOD_REPLACE, "mail", [mail.encode()])])


def _dn_key(dn: str) -> str:
    """A DN in one comparable form: parsed, re-joined without spaces, lower-cased."""
    try:
        return ldap.dn.dn2str(ldap.dn.str2dn(dn)).lower()
    except ldap.DECODING_ERROR:
        return dn.strip().lower()


def access_group_uids() -> frozenset[str] | None:
    """The ``uid`` of every person under the users OU who is in the access group now (lower-case), or None
    when no access group is configured (everyone under the OU may log in).

    Raises DirectoryUnavailable / DirectoryError (the latter also when the group is missing): an empty answer must
    mean an empty group, never a directory that could not be read."""
    config = _config()
    if not config.access_group:
        return None
    with _connection(config) as conn:
        try:
            results = conn.search_s(config.access_group, ldap.SCOPE_BASE, "(objectClass=*)", [config.member_attribute])
        except ldap.NO_SUCH_OBJECT as exc:
            raise DirectoryError(f"the access group {config.access_group} does not exist") from exc
    members = results[0][1].get(config.member_attribute, []) if results else []
    users_ou = _dn_key(config.users_ou)
    uids = set()
    for value in members:
        try:
            rdns = ldap.dn.str2dn(value.decode())
        except ldap.DECODING_ERROR:
            continue
        if len(rdns) < 2 or _dn_key(ldap.dn.dn2str(rdns[1:])) != users_ou:
            continue
        attr, uid, _flags = rdns[0][0]
        if attr.lower() == "uid":
            uids.add(uid.lower())
    return frozenset(uids)
