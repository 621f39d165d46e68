"""REST plumbing shared by every app: pagination, the body parsers and the one error shape ``{"detail", "code"}``.

Kept free of view imports at module level: DRF loads this module (pagination, parsers) while it builds its
views."""

from __future__ import annotations

import codecs
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404, QueryDict
from rest_framework import exceptions, parsers
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.utils import json

from core.errors import ApplicationError


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


# Deeper JSON than any of our request bodies needs; refusing it here keeps later code from recursing on it.
MAX_JSON_DEPTH = 32


class RequestTooLarge(exceptions.APIException):
    status_code = 413
    default_code = "too-large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than {limit} bytes.", code=self.default_code)


def _read_body(stream: Any, parser_context: dict[str, Any] | None) -> bytes:
    """The body, refused (413) past DATA_UPLOAD_MAX_MEMORY_SIZE: by its Content-Length before reading, or
    after reading one byte more than the limit when the length is not declared."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if stream is None:
        return b""
    if limit is None:
        return bytes(stream.read())
    request = (parser_context or {}).get("request")
    declared = request.META.get("CONTENT_LENGTH") if request is not None else None
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(limit)
    body = bytes(stream.read(limit + 1))
    if len(body) > limit:
        raise RequestTooLarge(limit)
    return body


def _json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether lists and objects nest deeper than ``limit`` levels (iterative: no recursion on hostile input)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with a size limit (413 ``too-large``) and a nesting limit (400 ``parse-error``)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        body = _read_body(stream, parser_context)
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.decode(body, encoding)
            data = json.loads(text, parse_constant=json.strict_constant if self.strict else None)
        except RecursionError:
            raise exceptions.ParseError(
                f"JSON parse error - the document nests deeper than {MAX_JSON_DEPTH} levels.", code="parse-error"
            ) from None
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}", code="parse-error") from None
        if _json_depth_exceeds(data, MAX_JSON_DEPTH):
            raise exceptions.ParseError(
                f"JSON parse error - the document nests deeper than {MAX_JSON_DEPTH} levels.", code="parse-error"
            )
        return data


class FormParser(parsers.FormParser):
    """DRF's form parser, reading at most DATA_UPLOAD_MAX_MEMORY_SIZE (DRF's own reads everything)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> QueryDict:
        body = _read_body(stream, parser_context)
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        return QueryDict(body, encoding=encoding)


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
    if isinstance(exc, RequestDataTooBig):
        # Django's own limit, met when a view reads request.body or request.POST.
        exc = RequestTooLarge(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    elif isinstance(exc, SuspiciousOperation):
        # Django answers these with its HTML 400 page; the API answers in its own shape.
        exc = exceptions.ParseError(str(exc), code="bad-request")
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    # Imported here: rest_framework.views reads DEFAULT_PARSER_CLASSES, which name this module's parsers.
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    message, code = _first_error(exc.detail, exc.get_codes())
    response.data = {"detail": message, "code": code}
    if isinstance(exc, exceptions.ValidationError) and not isinstance(exc.detail, str):
        response.data["errors"] = exc.detail
    return response
