"""Compute's pages of the admin console (staff only): hosts with their load and maintenance, networks and who holds
which address, instance types, and every instance and volume of the site. Reads go through the selectors, every
change through a service (which writes the audit entry)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from compute import console_forms, selectors, services
from compute.models import Host
from core.errors import ApplicationError
from core.pages import error_pages, staff_required

PAGE_SIZE = 50


def _page(request: HttpRequest, items: Any) -> Page:
    return Paginator(items, PAGE_SIZE).get_page(request.GET.get("page"))


def _query_without_page(request: HttpRequest) -> str:
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


def _load(used: float, capacity: float) -> int:
    """Percent of ``capacity`` used, for the load bars (capped at 100 for the bar; the numbers say the rest)."""
    return min(100, round(100 * used / capacity)) if capacity > 0 else 100


def _host_rows(hosts: Any) -> list[dict[str, Any]]:
    rows = []
    for host in hosts:
        vcpus_capacity = float(host.vcpus * host.cpu_allocation_ratio)
        ram_capacity = float(host.ram_mib * host.ram_allocation_ratio)
        if not host.enabled:
            status = "disabled"
        elif host.maintenance:
            status = "maintenance"
        else:
            status = host.state
        rows.append(
            {
                "host": host,
                "status": status,
                "vcpus_capacity": vcpus_capacity,
                "ram_capacity": ram_capacity,
                "vcpus_load": _load(host.vcpus_used, vcpus_capacity),
                "ram_load": _load(host.ram_used, ram_capacity),
            }
        )
    return rows


@staff_required
@require_GET
def console_hosts(request: HttpRequest) -> HttpResponse:
    """Every host: state, capacity under overcommit, what its live instances use, and the maintenance switch."""
    page = _page(request, selectors.host_load_list())
    page.object_list = _host_rows(page.object_list)
    return render(
        request,
        "compute/console_hosts.html",
        {"page": page, "query": _query_without_page(request), "form": console_forms.MaintenanceForm()},
    )


@staff_required
@require_POST
@error_pages
def console_host_maintenance(request: HttpRequest, host_id: int, action: str) -> HttpResponse:
    """``action`` is ``set`` (into maintenance) or ``clear`` (back in service)."""
    host: Host = selectors.access_host(host_id=host_id)
    form = console_forms.MaintenanceForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        services.host_maintenance_set(actor=request.user, host=host, maintenance=action == "set", reason=reason)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        if action == "set":
            messages.success(request, f"Host {host.name} is in maintenance: no new VM goes there.")
        else:
            messages.success(request, f"Host {host.name} is back in service.")
    return redirect("console-hosts")


@staff_required
@require_GET
def console_networks(request: HttpRequest) -> HttpResponse:
    page = _page(request, selectors.network_list())
    return render(request, "compute/console_networks.html", {"page": page, "query": _query_without_page(request)})


@staff_required
@require_GET
@error_pages
def console_network(request: HttpRequest, network_id: int) -> HttpResponse:
    """One network's leases: which address and MAC each VM (project, owner) holds, and which are free."""
    network = selectors.access_network(network_id=network_id)
    form = console_forms.LeaseFilter(request.GET or None)
    leases = selectors.lease_list(network=network)
    status = 200
    if form.is_bound and not form.is_valid():
        leases = leases.none()
        status = 400
    elif form.is_bound and form.cleaned_data["held"]:
        leases = leases.filter(instance__isnull=form.cleaned_data["held"] == "free")
    page = _page(request, leases)
    return render(
        request,
        "compute/console_network.html",
        {"network": network, "page": page, "form": form, "query": _query_without_page(request)},
        status=status,
    )


def _instance_types(request: HttpRequest, *, status: int = 200, **forms: Any) -> HttpResponse:
    page = _page(request, selectors.instance_type_admin_list())
    edited = forms.pop("edited", None)
    rows = [
        {
            "type": itype,
            "form": edited[1] if edited and edited[0] == itype.pk else console_forms.InstanceTypeForm.for_type(itype),
        }
        for itype in page.object_list
    ]
    page.object_list = rows
    context = {
        "page": page,
        "query": _query_without_page(request),
        "create_form": forms.get("create_form") or console_forms.InstanceTypeCreateForm(prefix="new"),
    }
    return render(request, "compute/console_instance_types.html", context, status=status)


@staff_required
@require_GET
def console_instance_types(request: HttpRequest) -> HttpResponse:
    return _instance_types(request)


def _add_service_error(form: Any, exc: ApplicationError) -> None:
    field = {"instance-type-name": "name", "instance-type-exists": "name"}.get(exc.code)
    form.add_error(field, exc.message)


@staff_required
@require_POST
def console_instance_type_create(request: HttpRequest) -> HttpResponse:
    form = console_forms.InstanceTypeCreateForm(request.POST, prefix="new")
    if form.is_valid():
        try:
            itype = services.instance_type_create(actor=request.user, **form.cleaned_data)
        except ApplicationError as exc:
            _add_service_error(form, exc)
        else:
            messages.success(request, f"Instance type {itype.name} is offered.")
            return redirect("console-instance-types")
    return _instance_types(request, status=400, create_form=form)


@staff_required
@require_POST
@error_pages
def console_instance_type_update(request: HttpRequest, name: str) -> HttpResponse:
    itype = selectors.instance_type_admin_get(name=name)
    form = console_forms.InstanceTypeForm.for_type(itype, data=request.POST)
    if form.is_valid():
        changes = form.changes(itype)
        if not changes:
            messages.info(request, f"Nothing changed in {itype.name}.")
            return redirect("console-instance-types")
        try:
            changed = services.instance_type_update(actor=request.user, instance_type=itype, **changes)
        except ApplicationError as exc:
            _add_service_error(form, exc)
        else:
            messages.success(request, f"Instance type {changed.name} is changed (new requests only).")
            return redirect("console-instance-types")
    return _instance_types(request, status=400, edited=(itype.pk, form))


@staff_required
@require_POST
@error_pages
def console_instance_type_retire(request: HttpRequest, name: str) -> HttpResponse:
    itype = selectors.instance_type_admin_get(name=name)
    try:
        kept = services.instance_type_retire(actor=request.user, instance_type=itype)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        if kept is None:
            messages.success(request, f"Instance type {itype.name} is deleted (no instance was ever made from it).")
        else:
            messages.success(request, f"Instance type {itype.name} is no longer offered (instances were made from it).")
    return redirect("console-instance-types")


def _filtered_list(request: HttpRequest, filterset: Any, template: str) -> HttpResponse:
    """A filtered, paginated listing; bad filter values are named on the page (400) and list nothing."""
    status = 200
    if filterset.is_bound and not filterset.is_valid():
        items = filterset.queryset.none()
        status = 400
    else:
        items = filterset.qs
    page = _page(request, items)
    return render(
        request, template, {"page": page, "filter": filterset, "query": _query_without_page(request)}, status=status
    )


@staff_required
@require_http_methods(["GET"])
def console_instances(request: HttpRequest) -> HttpResponse:
    """Every instance of the site, filtered by project, owner, state, host and image."""
    filterset = console_forms.InstanceFilter(request.GET or None, queryset=selectors.instance_admin_list())
    return _filtered_list(request, filterset, "compute/console_instances.html")


@staff_required
@require_http_methods(["GET"])
def console_volumes(request: HttpRequest) -> HttpResponse:
    """Every volume of the site, filtered by project, owner, state, kind and image."""
    filterset = console_forms.VolumeFilter(request.GET or None, queryset=selectors.volume_admin_list())
    return _filtered_list(request, filterset, "compute/console_volumes.html")
