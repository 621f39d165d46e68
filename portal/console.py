"""The admin console's pages of the portal (staff only): the overview (what waits, what runs, room for VMs, the
latest changes) and the audit log, every state change of the site, newest first, filtered by actor, action and
object. The log reads through the audit selector and filters of the admin API (``/api/v1/admin/audit/``), so
the page and the API answer the same question the same way."""

from __future__ import annotations

import django_filters
from django.contrib.contenttypes.models import ContentType
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts import selectors as account_selectors
from compute import scheduler
from compute import selectors as compute_selectors
from compute.models import InstanceState
from core.filters import AuditEntryFilter
from core.models import AuditEntry
from core.pages import staff_required
from core.selectors import audit_entry_list

PAGE_SIZE = 50


# The apps whose objects the audit log names (a fixed, small list: no scan of the log to find them).
AUDITED_APPS = ("accounts", "marketplace", "compute", "storage", "core", "auth")


def _object_types() -> list[tuple[str, str]]:
    """The kinds of object the log may name (``app_label.model``), for the filter's choices."""
    types = ContentType.objects.filter(app_label__in=AUDITED_APPS).order_by("app_label", "model")
    return [(f"{ct.app_label}.{ct.model}", f"{ct.app_label}.{ct.model}") for ct in types]


class AuditConsoleFilter(AuditEntryFilter):
    """The API's filters, with the object's kind as a choice and ``object`` matching its id or name."""

    action = django_filters.CharFilter(
        field_name="action", lookup_expr="startswith", label="Action (dotted prefix, e.g. compute.host)", max_length=100
    )
    actor = django_filters.CharFilter(field_name="actor_repr", label="Actor (username)", max_length=200)
    object_type = django_filters.ChoiceFilter(
        method="filter_object_type", label="Object kind", choices=_object_types, empty_label="any"
    )
    object = django_filters.CharFilter(method="filter_object", label="Object (id or name contains)", max_length=300)
    since = django_filters.IsoDateTimeFilter(
        field_name="created", lookup_expr="gte", label="Since (e.g. 2026-12-01T00:00:00Z)"
    )
    until = django_filters.IsoDateTimeFilter(field_name="created", lookup_expr="lt", label="Until")

    class Meta(AuditEntryFilter.Meta):
        fields: list[str] = []

    def filter_object(self, queryset: QuerySet[AuditEntry], name: str, value: str) -> QuerySet[AuditEntry]:
        value = value.strip()
        return queryset.filter(Q(object_id=value) | Q(object_repr__icontains=value))


# The instance states shown on the overview, in lifecycle order (terminated ones are history, not load).
OVERVIEW_INSTANCE_STATES = [s.value for s in InstanceState if s.value != InstanceState.TERMINATED]


@staff_required
@require_GET
def console_overview(request: HttpRequest) -> HttpResponse:
    """What needs an administrator now and how full the site is: a fixed number of queries."""
    instances = compute_selectors.instance_state_counts()
    context = {
        "pending_registrations": account_selectors.registration_list(actor=request.user, status="pending").count(),
        "hosts": compute_selectors.host_status_counts(),
        "instances": [(state, instances.get(state, 0)) for state in OVERVIEW_INSTANCE_STATES],
        "volumes": sorted(compute_selectors.volume_state_counts().items()),
        "room": scheduler.capacity(),
        "recent": audit_entry_list()[:10],
    }
    return render(request, "portal/console_overview.html", context)


@staff_required
@require_GET
def console_audit(request: HttpRequest) -> HttpResponse:
    filterset = AuditConsoleFilter(request.GET or None, queryset=audit_entry_list())
    status = 200
    if filterset.is_bound and not filterset.is_valid():
        entries = filterset.queryset.none()
        status = 400
    else:
        entries = filterset.qs
    page = Paginator(entries, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "portal/console_audit.html",
        {"page": page, "filter": filterset, "query": query.urlencode()},
        status=status,
    )
