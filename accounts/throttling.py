"""The cap on password-reset mails per account, whoever asks for them (the pages' per-address limits are
``core.throttling``). Kept out of ``views.py``: portal pages do not import the REST layer."""

from __future__ import annotations

import hashlib
from typing import Any

from django.http import HttpRequest
from rest_framework.throttling import SimpleRateThrottle


class _AccountResetThrottle(SimpleRateThrottle):
    """Counts reset mails per target address (hashed into the cache key), whoever asks for them."""

    scope = "password_reset_account"

    def __init__(self, email: str) -> None:
        self.address = hashlib.sha256(email.strip().lower().encode()).hexdigest()
        super().__init__()

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.address}


def password_reset_allowed(request: HttpRequest, *, email: str) -> bool:
    """True while ``email`` is under its ``password_reset_account`` rate (and counts this reset mail)."""
    return _AccountResetThrottle(email).allow_request(request, None)  # type: ignore[arg-type]
