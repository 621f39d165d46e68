"""Marketplace REST API (DESIGN §6): images, their search and their detail."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from django.db.models import QuerySet
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from django_filters.utils import translate_validation
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, serializers
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.settings import api_settings
from rest_framework.utils.urls import remove_query_param, replace_query_param
from rest_framework.views import APIView

from core.pages import MAX_OFFSET
from marketplace import selectors
from marketplace.api.entries import ERROR, EntrySummarySerializer, datetime_json
from marketplace.filters import ImageSearchFilter
from marketplace.models import Image


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


class SearchPagination(PageNumberPagination):
    """Page-number pages whose ``count`` may be the database's estimate (``count_is_estimate``) when a search
    finds more images than are worth counting exactly on every page (``selectors.EXACT_COUNT_UP_TO``).

    Whether a next page exists is known from the page itself (one row more is read), not from the count."""

    page_size_query_param = "page_size"
    max_page_size = 500

    def page_bounds(self, request: Request) -> tuple[int, int, int]:
        """(page number, offset, page size) from the query, or NotFound for a page that is not a number ≥ 1 or lies
        beyond any Marketplace (its offset past :data:`core.pages.MAX_OFFSET`, which databases refuse)."""
        size = self.get_page_size(request) or 50
        raw = request.query_params.get(self.page_query_param, "1")
        number = int(raw) if raw.isascii() and raw.isdigit() else 0
        if number < 1 or (number - 1) * size > MAX_OFFSET:
            raise NotFound("Invalid page.")
        return number, (number - 1) * size, size

    def response(self, request: Request, number: int, page: selectors.SearchPage, results: list) -> Response:
        if number > 1 and not (page.images or page.rendered):
            raise NotFound("Invalid page.")
        url = request.build_absolute_uri()
        following = replace_query_param(url, self.page_query_param, number + 1) if page.has_next else None
        if number <= 1:
            preceding = None
        elif number == 2:
            preceding = remove_query_param(url, self.page_query_param)
        else:
            preceding = replace_query_param(url, self.page_query_param, number - 1)
        return Response(
            {
                "count": page.count.value,
                "count_is_estimate": page.count.is_estimate,
                "next": following,
                "previous": preceding,
                "results": results,
            }
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        paginated = super().get_paginated_response_schema(schema)
        paginated["properties"]["count_is_estimate"] = {
            "type": "boolean",
            "description": "True when `count` is the database's estimate (a search finding more than "
            f"{selectors.EXACT_COUNT_UP_TO} images), not an exact count.",
        }
        paginated["required"] = [*paginated.get("required", []), "count_is_estimate"]
        return paginated


class _RawResults(list):
    """JSON texts that the page's renderer writes as they are (:class:`SearchJSONRenderer`)."""


class SearchJSONRenderer(JSONRenderer):
    """DRF's JSON renderer, which writes a page's results that are already JSON texts (:class:`_RawResults`, from
    the database) as they are instead of decoding and encoding them again."""

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, _RawResults):
            return super().render(data, accepted_media_type, renderer_context)
        envelope = super().render({**data, "results": []}, accepted_media_type, renderer_context)
        mark = envelope.rindex(b"[]")  # results are the envelope's last member
        return envelope[:mark] + b"[" + ",".join(results).encode() + b"]" + envelope[mark + 2 :]


class ImageListApi(generics.ListAPIView):
    """Search images. Each result carries every endorser's latest entry and its status.

    ``count`` is exact up to some ten thousand images; above that it is the database's estimate and
    ``count_is_estimate`` is true. Pages reach the first 10,000 images of a search (``next`` is null there); a page
    past them is refused (400, ``search-too-deep``): narrow the search instead."""

    permission_classes = [permissions.AllowAny]
    serializer_class = ImageSerializer
    filterset_class = ImageSearchFilter
    pagination_class = SearchPagination
    renderer_classes = [
        SearchJSONRenderer if renderer is JSONRenderer else renderer
        for renderer in api_settings.DEFAULT_RENDERER_CLASSES
    ]

    def get_queryset(self) -> QuerySet[Image]:
        return selectors.image_list()

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        backend = DjangoFilterBackend()
        filterset = backend.get_filterset(request, self.get_queryset(), self)
        if not filterset.is_valid():
            raise translate_validation(filterset.errors)
        paginator = SearchPagination()
        number, offset, size = paginator.page_bounds(request)
        now = timezone.now()
        # The database renders the page when times are shown in UTC, the site's zone (datetime_json's fast path).
        urls = _page_urls(request) if timezone.get_current_timezone_name() == "UTC" else None
        page = selectors.image_search_page(
            filterset.criteria(), ordering=filterset.sort_order(), offset=offset, limit=size, now=now, urls=urls
        )
        if page.rendered is None:
            return paginator.response(request, number, page, render_search_page(page, request=request))
        rendered = _urls_filled(page.rendered, request=request)
        if isinstance(request.accepted_renderer, JSONRenderer):
            # The database's JSON goes out as it is, inside the page's envelope (rendered by DRF).
            return paginator.response(request, number, page, _RawResults(rendered))
        return paginator.response(request, number, page, [json.loads(text) for text in rendered])


def _page_urls(request: Request) -> selectors.PageUrls:
    image = _url_template("api-marketplace-image", request, identifier="I")
    entry = _url_template("api-marketplace-entry", request, identifier="I", email="E", created="C")
    return selectors.PageUrls(image=image.template, entry=entry.template)


def _urls_filled(images: list[selectors.RenderedImage], *, request: Request) -> list[str]:
    """A database-rendered page's JSON texts, with the entry URLs it left out (e-mails a URL must quote) filled in."""
    entry_url = None
    texts = []
    for image in images:
        if not image.lacks_urls:
            texts.append(image.json)
            continue
        data = json.loads(image.json)
        for entry in data["endorsements"]:
            if entry["url"] is None:
                entry_url = entry_url or _url_template(
                    "api-marketplace-entry", request, identifier="I", email="E", created="C"
                )
                created = entry["created"][:19] + "Z"
                entry["url"] = entry_url(identifier=entry["identifier"], email=entry["endorser"], created=created)
        texts.append(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    return texts


def render_search_page(page: selectors.SearchPage, *, request: Request | None) -> list[dict[str, Any]]:
    """The rows of a search page as :class:`ImageSerializer` renders images (a test holds the two equal);
    statuses come from the database, so that nothing is evaluated per row here."""
    image_url = _url_template("api-marketplace-image", request, identifier="I")
    entry_url = _url_template("api-marketplace-entry", request, identifier="I", email="E", created="C")
    results = []
    for row in page.images:
        endorsements = []
        current = 0
        for entry in row["latest"]:
            created = entry["created"].astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            current += entry["status"] == "valid"
            endorsements.append(
                {
                    "identifier": entry["identifier"],
                    "endorser": entry["endorser_email"],
                    "subject": entry["subject"],
                    "created": datetime_json(entry["created"]),
                    "status": entry["status"],
                    "is_latest": entry["is_latest"],
                    "deprecated_reason": entry["deprecated_reason"],
                    "valid_until": datetime_json(entry["valid_until"]),
                    "title": entry["title"],
                    "type": entry["type"],
                    "os": entry["os"],
                    "os_version": entry["os_version"],
                    "arch": entry["arch"],
                    "kind": entry["kind"],
                    "format": entry["format"],
                    "bytes": entry["bytes"],
                    "has_location": entry["has_location"],
                    "fingerprint": entry["fingerprint"],
                    "key_revoked": entry["key_revoked"],
                    "url": entry_url(identifier=entry["identifier"], email=entry["endorser_email"], created=created),
                }
            )
        results.append(
            {
                "identifier": row["identifier"],
                "title": row["title"],
                "description": row["description"],
                "os": row["os"],
                "os_version": row["os_version"],
                "arch": row["arch"],
                "kind": row["kind"],
                "format": row["format"],
                "bytes": row["bytes"],
                "sha1": row["sha1"],
                "checksums": row["checksums"],
                "first_endorsed": datetime_json(row["first_endorsed"]),
                "updated": datetime_json(row["updated"]),
                "current_endorsements": current,
                "endorsements": endorsements,
                "url": image_url(identifier=row["identifier"]),
            }
        )
    return results


class _UrlTemplate:
    """``name``'s URL with ``{placeholder}`` marks (``template``), filled with values quoted as ``reverse`` quotes
    them: reversed once per page rather than once per row."""

    def __init__(self, name: str, request: Request | None, placeholders: Iterable[str]) -> None:
        marks = {key: f"\x00{key}\x00" for key in placeholders}
        template = reverse(name, kwargs=marks, request=request)
        for key, mark in marks.items():
            template = template.replace(quote(mark, safe=_REVERSE_SAFE), "{" + key + "}")
        self.template = template

    def __call__(self, **values: str) -> str:
        return self.template.format(**{key: quote(value, safe=_REVERSE_SAFE) for key, value in values.items()})


def _url_template(name: str, request: Request | None, **placeholders: str) -> _UrlTemplate:
    return _UrlTemplate(name, request, placeholders)


# What Django's reverse() leaves unquoted in a path (RFC 3986 sub-delimiters and /~:@).
_REVERSE_SAFE = "!$&'()*+,;=/~:@"


class ImageDetailApi(APIView):
    permission_classes = [permissions.AllowAny]

    @extend_schema(operation_id="marketplace_images_retrieve", responses={200: ImageSerializer, 404: ERROR})
    def get(self, request: Request, identifier: str) -> Response:
        image = selectors.image_get(identifier=identifier)
        selectors.image_show(image)
        return Response(ImageSerializer(image, context={"request": request}).data)
