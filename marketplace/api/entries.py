"""Marketplace REST API (DESIGN §6): entries, image search, endorsers, and the account's OpenPGP keys."""

from __future__ import annotations

import datetime as dt
from typing import Any

import django_filters
from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import generics, permissions, serializers, status
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from core.errors import NotFound
from core.idempotency import idempotent
from marketplace import selectors, services
from marketplace.models import Endorser, Entry, Image, PgpKey

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


def signed_download_headers(identifier: str, created: str) -> dict[str, str]:
    """Headers for an entry's signed bytes: a file to save, never a document the browser renders or runs.
    An entry may carry any extension element, XHTML ``script`` included, and browsers run that in XML."""
    return {
        "Content-Disposition": f'attachment; filename="{identifier}-{created.replace(":", "")}.xml"',
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "X-Content-Type-Options": "nosniff",
    }


ERROR = inline_serializer("MarketplaceError", {"detail": serializers.CharField(), "code": serializers.CharField()})


def _body(request: Request) -> bytes:
    data = request.data
    return data if isinstance(data, bytes) else b""


# --- Serializers -----------------------------------------------------------------------------------------


_DATETIME = serializers.DateTimeField()


def _datetime(value: dt.datetime | None) -> str | None:
    return None if value is None else _DATETIME.to_representation(value)


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
            "created": _datetime(entry.created),
            "status": self.get_status(entry),
            "is_latest": entry.is_latest,
            "deprecated_reason": entry.deprecated_reason,
            "valid_until": _datetime(entry.valid_until),
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


class ImageSerializer(serializers.ModelSerializer):
    """An image with each endorser's latest entry and how many of them count now. Its title, description, OS,
    arch, kind and format are the claims of its most trusted current endorsement (the site's, else the one
    whose timeline started first); each endorsement carries its own claims. ``bytes`` and ``checksums`` are
    fixed by the first accepted entry."""

    current_endorsements = serializers.SerializerMethodField()
    # A declared nested field: DRF builds it once per list, not once per image.
    endorsements = EntrySummarySerializer(source="latest_entries", many=True, read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = [
            "identifier",
            "title",
            "description",
            "os",
            "os_version",
            "arch",
            "kind",
            "format",
            "bytes",
            "sha1",
            "checksums",
            "first_endorsed",
            "updated",
            "current_endorsements",
            "endorsements",
            "url",
        ]

    def get_current_endorsements(self, image: Image) -> int:
        return len(selectors.current_endorsements(image, now=self.context.get("now")))

    def get_url(self, image: Image) -> str:
        return reverse(
            "api-marketplace-image", kwargs={"identifier": image.identifier}, request=self.context.get("request")
        )


class EndorserSerializer(serializers.ModelSerializer):
    image_count = serializers.IntegerField(help_text="Images this endorser has an entry for.")
    current_count = serializers.IntegerField(help_text="Images this endorser currently endorses.")
    url = serializers.SerializerMethodField()

    class Meta:
        model = Endorser
        fields = [
            "email",
            "subject",
            "first_endorsed",
            "last_endorsed",
            "entry_count",
            "image_count",
            "current_count",
            "url",
        ]

    def get_url(self, endorser: Endorser) -> str:
        return reverse(
            "api-marketplace-endorser", kwargs={"email": endorser.email}, request=self.context.get("request")
        )


class PgpKeySerializer(serializers.ModelSerializer):
    revoked = serializers.SerializerMethodField()
    endorsing_uids = serializers.SerializerMethodField(
        help_text="The user IDs that may endorse: those carrying the account's e-mail. The other `uids` are "
        "not usable for endorsing (a user ID with someone else's e-mail gives no right to endorse as them)."
    )

    class Meta:
        model = PgpKey
        fields = [
            "fingerprint",
            "uids",
            "endorsing_uids",
            "emails",
            "created",
            "expires",
            "registered",
            "revoked",
            "revoked_at",
        ]

    def get_revoked(self, key: PgpKey) -> bool:
        return key.revoked_at is not None

    def get_endorsing_uids(self, key: PgpKey) -> list[str]:
        return selectors.pgp_key_endorsing_uids(key)


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


class EntryUploadApi(APIView):
    """Upload one signed entry; it becomes its endorser's latest for the image."""

    permission_classes = [permissions.IsAuthenticated]
    parser_classes = [SignedXmlParser, SignedRdfXmlParser]

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


def parse_created(value: str) -> dt.datetime:
    """The ``created`` part of an entry's URL (``YYYY-MM-DDTHH:MM:SSZ``); anything else is not found."""
    try:
        created = dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise NotFound(f"No entry created {value!r}: times look like 2025-01-31T12:00:00Z.") from None
    return created


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
        entry = selectors.entry_get(identifier=identifier, email=email, created=parse_created(created))
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


# --- Images ----------------------------------------------------------------------------------------------------


# How the search page names each ordering; the API takes the keys.
ORDERING_LABELS = {
    "-updated": "newest first",
    "updated": "oldest first",
    "title": "title A-Z",
    "-title": "title Z-A",
    "identifier": "identifier",
    "-identifier": "identifier, reversed",
    "-bytes": "largest first",
    "bytes": "smallest first",
}


class ImageSearchFilter(django_filters.FilterSet):
    """The search form of DESIGN §6. Its fields are collected here and applied together by
    ``selectors.image_search``, because they must all hold for the same endorser's latest entry."""

    q = django_filters.CharFilter(method="collect", label="Words", help_text="Words in the title or description.")
    os = django_filters.CharFilter(method="collect", label="OS", help_text="Operating system, e.g. Ubuntu (any case).")
    os_version = django_filters.CharFilter(
        method="collect", label="OS version", help_text="Operating system version, e.g. 24.04."
    )
    arch = django_filters.CharFilter(method="collect", label="Architecture", help_text="Architecture, e.g. x86_64.")
    kind = django_filters.ChoiceFilter(
        method="collect", label="Kind", choices=[("machine", "machine"), ("disk", "disk")], help_text="machine or disk."
    )
    endorser = django_filters.CharFilter(
        method="collect", label="Endorser", help_text="Endorser e-mail or key fingerprint."
    )
    status = django_filters.ChoiceFilter(
        method="collect",
        label="Status",
        choices=[(s, s) for s in selectors.STATUSES],
        empty_label="valid",
        help_text="Status of the matching latest entry; default valid.",
    )
    location = django_filters.ChoiceFilter(
        method="collect",
        label="Location",
        choices=[("web", "with a download location"), ("none", "without"), ("all", "all")],
        empty_label="all",
        help_text="web: has a download location; none: has none; default all.",
    )
    ordering = django_filters.ChoiceFilter(
        method="collect",
        label="Sort by",
        choices=[(o, ORDERING_LABELS[o]) for o in selectors.ORDERINGS],
        empty_label="newest first",
        help_text="Sort order; default -updated (newest endorsement first).",
    )

    class Meta:
        model = Image
        fields: list[str] = []

    def collect(self, queryset: QuerySet[Image], name: str, value: Any) -> QuerySet[Image]:
        return queryset

    def filter_queryset(self, queryset: QuerySet[Image]) -> QuerySet[Image]:
        criteria = {name: value for name, value in self.form.cleaned_data.items() if value not in (None, "")}
        return selectors.image_search(images=queryset, **criteria)


class ImageListApi(generics.ListAPIView):
    """Search images. Each result carries every endorser's latest entry and its status."""

    permission_classes = [permissions.AllowAny]
    serializer_class = ImageSerializer
    filterset_class = ImageSearchFilter

    def get_queryset(self) -> QuerySet[Image]:
        return selectors.image_list()

    def get_serializer_context(self) -> dict[str, Any]:
        # One clock for the whole page, so that every status in it is judged at the same moment.
        return {**super().get_serializer_context(), "now": timezone.now()}


class ImageDetailApi(APIView):
    permission_classes = [permissions.AllowAny]

    @extend_schema(operation_id="marketplace_images_retrieve", responses={200: ImageSerializer, 404: ERROR})
    def get(self, request: Request, identifier: str) -> Response:
        image = selectors.image_get(identifier=identifier)
        selectors.image_show(image)
        return Response(ImageSerializer(image, context={"request": request}).data)


# --- Endorsers --------------------------------------------------------------------------------------------------


class EndorserFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(method="collect", help_text="Part of the e-mail or user ID.")

    class Meta:
        model = Endorser
        fields: list[str] = []

    def collect(self, queryset: QuerySet[Endorser], name: str, value: str) -> QuerySet[Endorser]:
        return queryset

    def filter_queryset(self, queryset: QuerySet[Endorser]) -> QuerySet[Endorser]:
        return selectors.endorser_list(q=self.form.cleaned_data.get("q") or "")


class EndorserListApi(generics.ListAPIView):
    permission_classes = [permissions.AllowAny]
    serializer_class = EndorserSerializer
    filterset_class = EndorserFilter

    def get_queryset(self) -> QuerySet[Endorser]:
        return selectors.endorser_list()


class EndorserHistoryFilter(django_filters.FilterSet):
    identifier = django_filters.CharFilter(field_name="image__identifier", help_text="One image only.")

    class Meta:
        model = Entry
        fields: list[str] = []


class EndorserHistoryApi(generics.ListAPIView):
    """Every entry one endorser has signed, newest first."""

    permission_classes = [permissions.AllowAny]
    serializer_class = EntrySummarySerializer
    filterset_class = EndorserHistoryFilter

    @extend_schema(operation_id="marketplace_endorsers_history")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Entry]:
        if getattr(self, "swagger_fake_view", False):
            return Entry.objects.none()
        endorser = selectors.endorser_get(email=self.kwargs["email"])
        return selectors.endorser_history(endorser=endorser)


# --- The account's OpenPGP keys --------------------------------------------------------------------------------


class PgpKeyListApi(generics.ListAPIView):
    """Your registered OpenPGP keys; POST registers one (its user IDs must include your e-mail)."""

    permission_classes = [permissions.IsAuthenticated]
    serializer_class = PgpKeySerializer

    class InputSerializer(serializers.Serializer):
        armored = serializers.CharField(max_length=200_000, trim_whitespace=False)

    def get_queryset(self) -> QuerySet[PgpKey]:
        return selectors.pgp_key_list(actor=self.request.user)

    @extend_schema(
        operation_id="accounts_pgp_keys_create",
        request=InputSerializer,
        responses={201: PgpKeySerializer, 400: ERROR, 409: ERROR},
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key = services.pgp_key_register(actor=request.user, armored=data.validated_data["armored"])
        return Response(PgpKeySerializer(key).data, status=status.HTTP_201_CREATED)


class PgpKeyRevokeApi(APIView):
    """Revoke a key (its owner or staff): entries it signed stop counting as endorsements from now."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        operation_id="accounts_pgp_keys_revoke", request=None, responses={200: PgpKeySerializer, 404: ERROR, 409: ERROR}
    )
    def post(self, request: Request, fingerprint: str) -> Response:
        key = services.pgp_key_revoke(actor=request.user, fingerprint=fingerprint)
        return Response(PgpKeySerializer(key).data)
