"""Errors. Services raise :class:`ApplicationError` and its kinds; the API handler and the views render them.

Adapters (the modules that talk to gpg, LDAP, libvirt, qemu-img, tgtadm) raise their own typed errors, each a
:class:`TransientError` (asking again may help: host unreachable, daemon restarting, timeout) or a
:class:`PermanentError` (asking again will not: bad input, not found, refused). Services translate them into
application errors; tasks retry transient ones only (:func:`core.workflow.task`). Nothing outside an adapter
catches a library's own exception type."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """A refusal the user can act on: ``message`` says what went wrong, ``code`` names the rule."""

    status = 400
    default_code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.extra = extra or {}


class NotFound(ApplicationError):
    """Missing or not visible to the actor: the two are never told apart."""

    status = 404
    default_code = "not_found"


class PermissionDenied(ApplicationError):
    status = 403
    default_code = "permission_denied"


class Conflict(ApplicationError):
    """The request is well formed but collides with the current state (HTTP 409)."""

    status = 409
    default_code = "conflict"


class Unavailable(ApplicationError):
    """An outside system (directory, hypervisor, broker) did not answer; nothing was changed."""

    status = 503
    default_code = "unavailable"


class AdapterError(Exception):
    """An outside system failed; ``str(error)`` says what it answered, in words."""


class TransientError(AdapterError):
    """Asking again may help: the outside system is unreachable, restarting or did not answer in time."""


class PermanentError(AdapterError):
    """Asking again will not help: the outside system refused the request or the input is wrong."""
