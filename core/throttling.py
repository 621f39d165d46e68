"""Telling clients apart: rate limits and login lockouts per client address.

One rule says which address a request comes from (:func:`client_address`): ``REMOTE_ADDR`` when
``NUM_PROXIES`` is 0, else the address that many hops back in ``X-Forwarded-For`` (the last hop for one
proxy), which is what our own proxies wrote. It is DRF's ``get_ident`` under ``REST_FRAMEWORK["NUM_PROXIES"]``,
so the API throttles (``ScopedRateThrottle`` with ``throttle_scope``), the pages that ask
:func:`page_throttle_wait` with the same scope (one bucket per address for both) and the login lockout
(django-axes, ``AXES_CLIENT_IP_CALLABLE``) all key on the same address.
Rates are ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``; counts live in Django's cache.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.helpers import get_client_username, get_cool_off
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle


def client_address(request: Any) -> str:
    """The client's address under the NUM_PROXIES rule (a Django or DRF request)."""
    return BaseThrottle().get_ident(request) or ""


def login_client_address(request: HttpRequest) -> str | None:
    """:func:`client_address` for the login lockout, which stores it in an IP address column: a hop that is
    not an address (only possible when clients reach the portal around the proxies) counts as the
    connecting peer's."""
    address = client_address(request)
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return request.META.get("REMOTE_ADDR")


class LoginLockoutBackend(AxesStandaloneBackend):
    """django-axes' lockout check, first in AUTHENTICATION_BACKENDS. Calls without a request (management
    commands, tests calling ``authenticate(username=…)``) come from no client and are not checked; every
    login page, the admin's included, passes its request."""

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> None:  # type: ignore[override]
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


def lockout_response(
    request: HttpRequest, original_response: Any = None, credentials: dict | None = None
) -> HttpResponse:
    """The lockout page (AXES_LOCKOUT_CALLABLE): 429 in the site's layout, with Retry-After; under /api/ the
    API's error shape (a password sent to make a token is a login too)."""
    cool_off = get_cool_off(request)
    minutes = int(cool_off.total_seconds() // 60) if cool_off else None
    if request.path.startswith("/api/"):
        wait = f" for {minutes} minutes" if minutes else ""
        response: HttpResponse = JsonResponse(
            {
                "detail": f"Too many failed logins: logins for this username from your address are refused{wait}.",
                "code": "locked-out",
            },
            status=429,
        )
    else:
        response = render(
            request,
            "registration/locked_out.html",
            {
                "username": get_client_username(request, credentials) or "",
                "failure_limit": settings.AXES_FAILURE_LIMIT,
                "lockout_minutes": minutes,
            },
            status=429,
        )
    if cool_off:
        response["Retry-After"] = str(int(cool_off.total_seconds()))
    return response


class _AddressThrottle(SimpleRateThrottle):
    def __init__(self, scope: str) -> None:
        self.scope = scope
        super().__init__()

    def get_cache_key(self, request: Any, view: Any) -> str:
        # The same key DRF's ScopedRateThrottle uses for an anonymous client.
        return self.cache_format % {"scope": self.scope, "ident": client_address(request)}


def page_throttle_wait(request: HttpRequest, scope: str) -> float | None:
    """None when the request may go on (and counts it); else the seconds to wait."""
    throttle = _AddressThrottle(scope)
    if throttle.allow_request(request, None):
        return None
    return throttle.wait() or 1.0
