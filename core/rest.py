"""REST plumbing shared by every app: pagination and the one error shape ``{"detail", "code"}``.

Kept free of view imports: DRF loads this module while it builds its generic views."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import ApplicationError


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


def _first_error(detail: Any, codes: Any) -> tuple[str, str]:
    """The first (message, code) inside a DRF error detail, which may be a string, list or field dict.
    A field's message is prefixed with the field's name so that it reads on its own."""
    if isinstance(detail, dict):
        field = next(iter(detail))
        message, code = _first_error(detail[field], codes[field])
        return (message if field == "non_field_errors" else f"{field}: {message}"), code
    if isinstance(detail, list) and detail:
        return _first_error(detail[0], codes[0])
    return str(detail), str(codes)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Render every API error as ``{"detail": str, "code": str}``; validation errors add the
    per-field ``errors`` so forms can show each next to its field."""
    if isinstance(exc, ApplicationError):
        return Response({"detail": exc.message, "code": exc.code, **exc.extra}, status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    message, code = _first_error(exc.detail, exc.get_codes())
    response.data = {"detail": message, "code": code}
    if isinstance(exc, exceptions.ValidationError) and not isinstance(exc.detail, str):
        response.data["errors"] = exc.detail
    return response
