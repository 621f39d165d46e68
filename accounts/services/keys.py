"""SSH public keys of a user."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from accounts.models import SshKey
from accounts.sshkeys import parse_public_key
from core import audit
from core.errors import Conflict


def ssh_key_add(*, actor: User, name: str, public_key: str) -> SshKey:
    """Store an SSH public key of ``actor`` after parsing it; names and keys are unique per user."""
    name = name.strip()
    parsed = parse_public_key(public_key)
    if not name:
        name = parsed.comment[:100] or parsed.fingerprint
    if SshKey.objects.filter(user=actor, name=name).exists():
        raise Conflict(f"you already have a key named {name!r}", code="ssh-key-exists")
    if SshKey.objects.filter(user=actor, fingerprint=parsed.fingerprint).exists():
        raise Conflict(f"you already added this key ({parsed.fingerprint})", code="ssh-key-exists")
    try:
        with transaction.atomic():
            key = SshKey.objects.create(
                user=actor,
                name=name,
                public_key=parsed.line,
                key_type=parsed.key_type,
                bits=parsed.bits,
                fingerprint=parsed.fingerprint,
            )
            audit.record(actor, "accounts.ssh_key.added", key, fingerprint=parsed.fingerprint)
    except IntegrityError:
        raise Conflict("you already added this key or a key with this name", code="ssh-key-exists") from None
    return key


def ssh_key_delete(*, actor: User, key: SshKey) -> None:
    with transaction.atomic():
        audit.record(actor, "accounts.ssh_key.deleted", key, fingerprint=key.fingerprint)
        key.delete()
