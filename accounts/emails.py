"""Who holds an e-mail address. An address names one person: an account, a pending applicant, or a holder
that an app further up registers (the Marketplace's site key and endorsers).

Accounts knows nothing of the Marketplace. Apps that give an address a meaning of their own register a claim
at start-up (``AppConfig.ready``)::

    register_email_claim(marketplace_email_claim)

A claim is ``claim(email, user) -> str | None``: why ``email`` (lower-case) cannot belong to ``user`` (``None``
for an applicant who has no account yet), or ``None`` when the claim has no objection. Registration, approval
and every change of e-mail ask :func:`email_claim` before an address is given to anyone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import User

from accounts.models import RegistrationRequest

EmailClaim = Callable[[str, Any], "str | None"]

_claims: list[EmailClaim] = []
_claims_lock = threading.Lock()


def register_email_claim(claim: EmailClaim) -> None:
    """Ask ``claim`` too whenever an address is about to be given to someone (idempotent per function)."""
    with _claims_lock:
        if claim not in _claims:
            _claims.append(claim)


def unregister_email_claim(claim: EmailClaim) -> None:
    """Stop asking ``claim`` (tests, and apps that are switched off at run time)."""
    with _claims_lock:
        if claim in _claims:
            _claims.remove(claim)


def email_normalise(email: str) -> str:
    """The form addresses are compared and stored in: stripped, lower-case."""
    return (email or "").strip().lower()


def email_claim(email: str, *, user: Any = None, exclude_registration: int | None = None) -> str | None:
    """Why ``email`` cannot be ``user``'s (``None``: an applicant), in words for the person asking; ``None`` if it can.

    Looks at other active accounts, then at pending registrations (but not ``exclude_registration``, the
    request being approved), then at every registered claim, in registration order."""
    address = email_normalise(email)
    if not address:
        return None
    others = User.objects.filter(email__iexact=address, is_active=True)
    if user is not None and getattr(user, "pk", None) is not None:
        others = others.exclude(pk=user.pk)
    if others.exists():
        return "an account with this e-mail address already exists; use password reset"
    pending = RegistrationRequest.objects.filter(email__iexact=address, status=RegistrationRequest.Status.PENDING)
    if exclude_registration is not None:
        pending = pending.exclude(pk=exclude_registration)
    if pending.exists():
        return "a registration with this e-mail address is already waiting for a decision"
    with _claims_lock:
        claims = list(_claims)
    for claim in claims:
        reason = claim(address, user)
        if reason:
            return reason
    return None
