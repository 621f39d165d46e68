"""Rate limits on anonymous endpoints, per client address, shared by the API and the portal pages.

The API views use DRF's ``ScopedRateThrottle`` with ``throttle_scope``; a plain Django view asks
:func:`page_throttle_wait` with the same scope, so that both count in one bucket per address.
Rates are ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``; counts live in Django's cache.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from rest_framework.throttling import SimpleRateThrottle


class _AddressThrottle(SimpleRateThrottle):
    def __init__(self, scope: str) -> None:
        self.scope = scope
        super().__init__()

    def get_cache_key(self, request: Any, view: Any) -> str:
        # The same key DRF's ScopedRateThrottle uses for an anonymous client.
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def page_throttle_wait(request: HttpRequest, scope: str) -> float | None:
    """None when the request may go on (and counts it); else the seconds to wait."""
    throttle = _AddressThrottle(scope)
    if throttle.allow_request(request, None):
        return None
    return throttle.wait() or 1.0
