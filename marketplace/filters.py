"""The Marketplace's search and list filters (plain django-filter): the search page and the API read the
same query parameters through the same FilterSets."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import django_filters
from django.db.models import QuerySet

from marketplace import selectors
from marketplace.models import Endorser, Entry, Image

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
        return selectors.image_search(images=queryset, ordering=self.sort_order(), **asdict(self.criteria()))

    def criteria(self) -> selectors.SearchCriteria:
        """The filters of a valid form."""
        given = {name: value for name, value in self.form.cleaned_data.items() if value not in (None, "")}
        given.pop("ordering", None)
        return selectors.SearchCriteria(**given)

    def sort_order(self) -> str:
        return self.form.cleaned_data.get("ordering") or selectors.DEFAULT_ORDERING


class EndorserFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(method="collect", help_text="Part of the e-mail or user ID.")

    class Meta:
        model = Endorser
        fields: list[str] = []

    def collect(self, queryset: QuerySet[Endorser], name: str, value: str) -> QuerySet[Endorser]:
        return queryset

    def filter_queryset(self, queryset: QuerySet[Endorser]) -> QuerySet[Endorser]:
        return selectors.endorser_list(q=self.form.cleaned_data.get("q") or "")


class EndorserHistoryFilter(django_filters.FilterSet):
    identifier = django_filters.CharFilter(field_name="image__identifier", help_text="One image only.")

    class Meta:
        model = Entry
        fields: list[str] = []
