"""Marketplace REST API (DESIGN §6): entries. The signed-XML wire formats, the error shape every Marketplace
endpoint documents, the entry serializers the other resources nest, and upload, validate and detail."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import permissions, serializers, status
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from core.idempotency import idempotent
from marketplace import selectors, services
from marketplace.downloads import PAGE_HEADERS, entries_page_xml, signed_download_headers
from marketplace.models import Entry

# --- Wire formats ----------------------------------------------------------------------------------------


class SignedXmlParser(BaseParser):
    """The request body as bytes, untouched: the signature covers them. Reads one byte past the limit
    so that an oversized body is refused without being read whole."""

    media_type = "application/xml"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> bytes:
        if stream is None:
            return b""
        limit = int(getattr(settings, "MARKETPLACE_MAX_ENTRY_BYTES", 1024 * 1024))
        return bytes(stream.read(limit + 1))


class SignedRdfXmlParser(SignedXmlParser):
    media_type = "application/rdf+xml"


class SignedXmlRenderer(BaseRenderer):
    """Renders an entry's original signed bytes, unchanged (``?format=xml`` or ``Accept: application/xml``)."""

    media_type = "application/xml"
    format = "xml"
    charset = None
    render_style = "binary"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return bytes(data)


class SignedRdfXmlRenderer(SignedXmlRenderer):
    media_type = "application/rdf+xml"
    format = "rdf"


ERROR = inline_serializer("MarketplaceError", {"detail": serializers.CharField(), "code": serializers.CharField()})


def _body(request: Request) -> bytes:
    data = request.data
    return data if isinstance(data, bytes) else b""


# --- Serializers -----------------------------------------------------------------------------------------


_DATETIME = serializers.DateTimeField()


def datetime_json(value: dt.datetime | None) -> str | None:
    """A time as DRF's DateTimeField writes it (ISO 8601, ``Z`` for UTC); directly while the current time zone is
    UTC (the site's), since lists write hundreds of these."""
    if value is None:
        return None
    if timezone.get_current_timezone_name() == "UTC" and value.tzinfo is not None:
        text = value.astimezone(dt.UTC).isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    return _DATETIME.to_representation(value)


def _entry_url(entry: Entry, request: Request | None) -> str:
    return reverse(
        "api-marketplace-entry",
        kwargs={"identifier": entry.image.identifier, "email": entry.endorser.email, "created": entry.created_text},
        request=request,
    )


class EntrySummarySerializer(serializers.ModelSerializer):
    """One entry in a list: who said what about which image, and its status now."""

    identifier = serializers.CharField(source="image.identifier")
    endorser = serializers.CharField(source="endorser.email")
    status = serializers.SerializerMethodField()
    key_revoked = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = Entry
        fields = [
            "identifier",
            "endorser",
            "subject",
            "created",
            "status",
            "is_latest",
            "deprecated_reason",
            "valid_until",
            "title",
            "type",
            "os",
            "os_version",
            "arch",
            "kind",
            "format",
            "bytes",
            "has_location",
            "fingerprint",
            "key_revoked",
            "url",
        ]

    def to_representation(self, entry: Entry) -> dict[str, Any]:
        # Search pages render hundreds of these: build the dict directly rather than field by field
        # (the declared fields still describe it; a test holds the two to the same output).
        if type(self) is not EntrySummarySerializer:
            return super().to_representation(entry)
        return {
            "identifier": entry.image.identifier,
            "endorser": entry.endorser.email,
            "subject": entry.subject,
            "created": datetime_json(entry.created),
            "status": self.get_status(entry),
            "is_latest": entry.is_latest,
            "deprecated_reason": entry.deprecated_reason,
            "valid_until": datetime_json(entry.valid_until),
            "title": entry.title,
            "type": entry.type,
            "os": entry.os,
            "os_version": entry.os_version,
            "arch": entry.arch,
            "kind": entry.kind,
            "format": entry.format,
            "bytes": entry.bytes,
            "has_location": entry.has_location,
            "fingerprint": entry.fingerprint,
            "key_revoked": self.get_key_revoked(entry),
            "url": self.get_url(entry),
        }

    @extend_schema_field(serializers.ChoiceField(choices=Entry.Status.choices))
    def get_status(self, entry: Entry) -> str:
        return selectors.entry_status(entry, now=self.context.get("now"))

    def get_key_revoked(self, entry: Entry) -> bool:
        return entry.key is not None and entry.key.revoked_at is not None

    def get_url(self, entry: Entry) -> str:
        return _entry_url(entry, self.context.get("request"))


class EntryDetailSerializer(EntrySummarySerializer):
    """One entry with everything its document says."""

    sha1 = serializers.CharField()
    sha256 = serializers.CharField()
    xml_url = serializers.SerializerMethodField()

    class Meta(EntrySummarySerializer.Meta):
        fields = [
            *EntrySummarySerializer.Meta.fields,
            "issuer",
            "uploaded",
            "description",
            "compression",
            "locations",
            "sha1",
            "sha256",
            "details",
            "xml_url",
        ]

    def get_xml_url(self, entry: Entry) -> str:
        return f"{_entry_url(entry, self.context.get('request'))}?format=xml"


def entry_created_response(entry: Entry, request: Request) -> Response:
    """201 with the new entry and its ``Location``: the answer of every call that stores an entry."""
    body = EntryDetailSerializer(entry, context={"request": request}).data
    return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})


class ValidationSerializer(serializers.Serializer):
    valid = serializers.BooleanField(help_text="Whether the document is valid metadata (the signature apart).")
    errors = inline_serializer(
        "MarketplaceProblem", {"rule": serializers.CharField(), "message": serializers.CharField()}, many=True
    )
    warnings = inline_serializer(
        "MarketplaceAdvice", {"rule": serializers.CharField(), "message": serializers.CharField()}, many=True
    )
    identifier = serializers.CharField(allow_null=True)
    signature = inline_serializer(
        "MarketplaceSignatureCheck",
        {
            "kind": serializers.ChoiceField(choices=["none", "openpgp", "xmldsig"]),
            "verified": serializers.BooleanField(),
            "fingerprint": serializers.CharField(allow_null=True),
            "check": serializers.CharField(allow_null=True, help_text="The failed check, when not verified."),
            "message": serializers.CharField(),
        },
    )


# --- Entries -------------------------------------------------------------------------------------------------

XML_BODY = {"application/xml": OpenApiTypes.BINARY, "application/rdf+xml": OpenApiTypes.BINARY}


class EntryPagination(CursorPagination):
    """Entries in the order the Marketplace stored them (each timeline oldest first), by a stable cursor."""

    ordering = ("id",)
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 500


class EntryPageXmlRenderer(SignedXmlRenderer):
    """A page of entries with their signed bytes (``?format=xml``): see ``downloads.entries_page_xml``."""


class EntryListUploadApi(APIView):
    """GET: every entry, page by page, oldest first (``?format=xml``: pages with the signed documents, what
    ``manage.py import_entries URL`` reads on another Marketplace). POST: upload one signed entry; it becomes
    its endorser's latest for the image."""

    parser_classes = [SignedXmlParser, SignedRdfXmlParser]
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer, EntryPageXmlRenderer]

    def get_permissions(self) -> list[Any]:
        return [permissions.AllowAny()] if self.request.method == "GET" else [permissions.IsAuthenticated()]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[Any, str]:
        if request.method != "GET":  # an upload answers in JSON whatever it asks for
            return JSONRenderer(), JSONRenderer.media_type
        return super().perform_content_negotiation(request, force)

    @extend_schema(
        operation_id="marketplace_entries_list",
        parameters=[
            OpenApiParameter("cursor", str, description="The page's cursor (from `next`)."),
            OpenApiParameter("page_size", int, description="Entries per page (at most 500; default 100)."),
            OpenApiParameter(
                "format", str, enum=["json", "xml"], description="`xml`: a page with each entry's signed document."
            ),
        ],
        responses={
            (200, "application/json"): EntrySummarySerializer(many=True),
            (200, "application/xml"): OpenApiTypes.BINARY,
        },
    )
    def get(self, request: Request) -> Response:
        paginator = EntryPagination()
        entries = selectors.entries_in_stored_order()
        page = paginator.paginate_queryset(entries, request, view=self) or []
        if isinstance(request.accepted_renderer, EntryPageXmlRenderer):
            body = entries_page_xml(
                ((_entry_url(entry, request), bytes(entry.raw)) for entry in page), next_link=paginator.get_next_link()
            )
            return Response(body, content_type="application/xml", headers=PAGE_HEADERS)
        return paginator.get_paginated_response(
            EntrySummarySerializer(page, many=True, context={"request": request}).data
        )

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(getattr(self.request, "accepted_renderer", None), SignedXmlRenderer):
            self.request.accepted_renderer = JSONRenderer()
            self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)

    @extend_schema(
        operation_id="marketplace_entries_create",
        request=XML_BODY,
        responses={
            201: EntryDetailSerializer,
            400: OpenApiResponse(ERROR, description="Invalid metadata or signature; `code` names the rule."),
            409: OpenApiResponse(ERROR, description="Not newer than the endorser's latest entry for the image."),
        },
    )
    @idempotent
    def post(self, request: Request) -> Response:
        entry = services.entry_upload(raw=_body(request), uploader=request.user)
        return entry_created_response(entry, request)


class EntryValidateApi(APIView):
    """Check a document as an upload would, without storing it. Anyone may call it (rate-limited)."""

    permission_classes = [permissions.AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "validate"
    parser_classes = [SignedXmlParser, SignedRdfXmlParser]

    @extend_schema(operation_id="marketplace_entries_validate", request=XML_BODY, responses={200: ValidationSerializer})
    def post(self, request: Request) -> Response:
        result = services.entry_validate(raw=_body(request))
        sig = result.signature
        return Response(
            {
                "valid": result.valid,
                "errors": [{"rule": p.rule, "message": p.message} for p in result.problems],
                "warnings": [{"rule": p.rule, "message": p.message} for p in result.warnings],
                "identifier": result.identifier,
                "signature": {
                    "kind": sig.kind,
                    "verified": sig.verified,
                    "fingerprint": sig.fingerprint,
                    "check": sig.check,
                    "message": sig.message,
                },
            }
        )


class EntryDetailApi(APIView):
    """One entry as JSON, or its original signed bytes with ``?format=xml`` or ``Accept: application/xml``.

    DRF reads ``?format=`` as its renderer override; the XML renderers here answer to it, so both ways
    of asking reach the same code path."""

    permission_classes = [permissions.AllowAny]
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer, SignedXmlRenderer, SignedRdfXmlRenderer]

    @extend_schema(
        operation_id="marketplace_entries_retrieve",
        parameters=[
            OpenApiParameter(
                "format", str, enum=["json", "xml", "rdf"], description="`xml`: the original signed document."
            )
        ],
        responses={
            (200, "application/json"): EntryDetailSerializer,
            (200, "application/xml"): OpenApiTypes.BINARY,
            (200, "application/rdf+xml"): OpenApiTypes.BINARY,
            404: OpenApiResponse(ERROR),
        },
    )
    def get(self, request: Request, identifier: str, email: str, created: str) -> Response:
        entry = selectors.entry_get(identifier=identifier, email=email, created=selectors.parse_created(created))
        if isinstance(request.accepted_renderer, SignedXmlRenderer):
            return Response(
                bytes(entry.raw),
                content_type=request.accepted_media_type,
                headers=signed_download_headers(identifier, created),
            )
        return Response(EntryDetailSerializer(entry, context={"request": request}).data)

    def handle_exception(self, exc: Exception) -> Response:
        # Errors are JSON whatever was asked for: the XML renderers only write stored documents.
        if isinstance(getattr(self.request, "accepted_renderer", None), SignedXmlRenderer):
            self.request.accepted_renderer = JSONRenderer()
            self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)
