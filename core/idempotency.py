"""``Idempotency-Key`` for create endpoints (DESIGN §6): a retried POST returns the first response.

Decorate a DRF view's ``post`` with :func:`idempotent`. The first request with a key claims it before
running; a retry with the same key and body gets the stored response again (``Idempotent-Replayed: true``);
the same key with another body is refused (422), and so is a retry while the first is still running (409).
A request that fails (4xx/5xx, or an exception) releases its key so that the client can try again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from core.errors import ApplicationError, Conflict
from core.models import IdempotencyRecord

HEADER = "Idempotency-Key"
KEEP_FOR = timedelta(hours=24)


class IdempotencyKeyReused(ApplicationError):
    status = 422
    default_code = "idempotency-key-reused"


def _digest(request: Request) -> str:
    content = b"\n".join([request.method.encode(), request.path.encode(), request.body])
    return hashlib.sha256(content).hexdigest()


def _replay(record: IdempotencyRecord, digest: str) -> Response:
    if record.request_digest != digest:
        raise IdempotencyKeyReused(
            f"{HEADER} {record.key!r} was already used for a different request; use a new key for a new request"
        )
    if record.response_status is None:
        raise Conflict(f"a request with {HEADER} {record.key!r} is still in progress", code="idempotency-key-in-use")
    headers = {"Idempotent-Replayed": "true"}
    if record.response_location:
        headers["Location"] = record.response_location
    return Response(record.response_body, status=record.response_status, headers=headers)


def _claim(*, user: Any, key: str, request: Request, digest: str) -> IdempotencyRecord:
    """Write the key's record before the request runs; IntegrityError when the key is taken."""
    with transaction.atomic():
        return IdempotencyRecord.objects.create(
            user=user, key=key, method=request.method, path=request.path, request_digest=digest
        )


def idempotency_records_purge() -> int:
    """Delete records older than KEEP_FOR (periodic task ``core.idempotency_purge``); returns how many."""
    deleted, _ = IdempotencyRecord.objects.filter(created__lt=timezone.now() - KEEP_FOR).delete()
    return deleted


IDEMPOTENCY_PARAMETER = OpenApiParameter(
    HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="Any unique string (e.g. a UUID). A retry with the same key and body returns the first "
    "response instead of creating again; the same key with another body is refused with 422.",
)


def idempotent(handler: Callable[..., Response]) -> Callable[..., Response]:
    @extend_schema(parameters=[IDEMPOTENCY_PARAMETER])
    @wraps(handler)
    def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.headers.get(HEADER, "").strip()
        if not key:
            return handler(view, request, *args, **kwargs)
        if len(key) > 255:
            raise ApplicationError(f"{HEADER} must be at most 255 characters", code="idempotency-key-invalid")
        user = request.user if request.user.is_authenticated else None
        digest = _digest(request)
        try:
            record = _claim(user=user, key=key, request=request, digest=digest)
        except IntegrityError:
            existing = IdempotencyRecord.objects.get(user=user, key=key)
            if existing.created >= timezone.now() - KEEP_FOR:
                return _replay(existing, digest)
            # A key older than KEEP_FOR that the periodic purge has not reached yet: free to use again.
            IdempotencyRecord.objects.filter(pk=existing.pk).delete()
            record = _claim(user=user, key=key, request=request, digest=digest)
        try:
            response = handler(view, request, *args, **kwargs)
        except BaseException:
            record.delete()
            raise
        if 200 <= response.status_code < 300:
            record.response_status = response.status_code
            record.response_body = response.data
            record.response_location = response.get("Location", "")
            record.save(update_fields=["response_status", "response_body", "response_location"])
        else:
            record.delete()
        return response

    return wrapper
