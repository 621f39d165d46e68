from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from accounts import selectors as account_selectors
from accounts.quotas import quotas_usage
from compute import scheduler, trust
from compute import selectors as compute_selectors
from compute.models import Instance
from compute.views import MOVING, Reach, actions_offered, instance_reach
from core.pages import error_pages, partial_login_required
from portal import health
from storage import selectors as storage_selectors

# The room-for-VMs chart: the width of a full bar (the room of an empty cluster) and the height of one row, in px.
ROOM_BAR_WIDTH = 240
ROOM_ROW_HEIGHT = 22
# The dashboard lists at most this many live VMs (the newest); the API lists them all.
DASHBOARD_INSTANCES = 200


@dataclass(frozen=True)
class InstanceRow:
    instance: Instance
    volumes: list[tuple[str, str]]  # (device, volume name)
    actions: list[str]
    reach: list[Reach]  # how to reach the VM from outside (ssh command, web links)


@dataclass(frozen=True)
class RoomBar:
    name: str
    vcpus: int
    ram_mib: int
    fits_now: int
    fits_when_empty: int
    width: int
    y: int


def _instance_rows(user: Any) -> dict[str, Any]:
    """The user's live VMs with their volumes' names, and the totals: a fixed number of queries for any number."""
    instances = list(
        compute_selectors.instance_list(actor=user)
        .live()
        .select_related("image")
        .prefetch_related("firewall_rules")[:DASHBOARD_INSTANCES]
    )
    held = {a.volume_uuid for i in instances for a in i.attachments.all()}
    names = dict(storage_selectors.volumes_visible_to(user).filter(uuid__in=held).values_list("uuid", "name"))
    rows = [
        InstanceRow(
            instance=i,
            volumes=[(a.device, names.get(a.volume_uuid, str(a.volume_uuid))) for a in i.attachments.all()],
            actions=actions_offered(i),
            reach=instance_reach(i),
        )
        for i in instances
    ]
    return {
        "rows": rows,
        "moving": any(i.state in MOVING for i in instances),
        "totals": {
            "instances": len(instances),
            "vcpus": sum(i.vcpus for i in instances),
            "ram_mib": sum(i.ram_mib for i in instances),
        },
    }


def _room_chart() -> dict[str, Any]:
    """Room for VMs per instance type ("m1.small 59 / 104"), with the bars of a small server-drawn SVG chart."""
    bars = []
    for index, room in enumerate(scheduler.capacity()):
        whole = room.fits_when_empty
        bars.append(
            RoomBar(
                name=room.instance_type.name,
                vcpus=room.instance_type.vcpus,
                ram_mib=room.instance_type.ram_mib,
                fits_now=room.fits_now,
                fits_when_empty=whole,
                width=round(ROOM_BAR_WIDTH * min(room.fits_now, whole) / whole) if whole else 0,
                y=index * ROOM_ROW_HEIGHT,
            )
        )
    return {
        "room": bars,
        "room_height": len(bars) * ROOM_ROW_HEIGHT,
        "room_bar_width": ROOM_BAR_WIDTH,
        "room_row_height": ROOM_ROW_HEIGHT,
    }


def home(request: HttpRequest) -> HttpResponse:
    """The researcher's dashboard: their VMs (kept live), quota bars per project and room for VMs; the notices
    about images their VMs run from that lost the site's trust. Anonymous visitors get the welcome."""
    context: dict[str, Any] = {"trust_notices": list(trust.trust_notices_open(user=request.user))}
    if request.user.is_authenticated:
        projects = list(account_selectors.project_list(actor=request.user))
        usage = quotas_usage(projects=projects)
        context.update(_instance_rows(request.user))
        context.update(_room_chart())
        context["quotas"] = [(project, list(usage[project.pk].values())) for project in projects]
    return render(request, "portal/home.html", context)


@partial_login_required
@require_GET
def dashboard_instances(request: HttpRequest) -> HttpResponse:
    """The dashboard's VM table alone: the htmx partial the dashboard polls for live states and CPU use."""
    return render(request, "portal/_instances.html", _instance_rows(request.user))


@login_required
@error_pages
@require_POST
def trust_notice_dismiss(request: HttpRequest, notice_id: int) -> HttpResponse:
    trust.trust_notice_dismiss(actor=request.user, notice_id=notice_id)
    messages.success(request, "Notice dismissed.")
    return redirect("home")


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Database and broker reachability; ``?worker=1`` also round-trips a ``portal.ping`` task."""
    checks = {"database": health.check_database(), "broker": health.check_broker()}
    if request.GET.get("worker") in {"1", "true", "yes"}:
        checks["worker"] = health.check_worker()
    ok = all(check.ok for check in checks.values())
    body = {
        "status": "ok" if ok else "error",
        "checks": {name: {"ok": check.ok, "detail": check.detail} for name, check in checks.items()},
    }
    return JsonResponse(body, status=200 if ok else 503)


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The 403 page in the site's layout (a researcher opening a console page, a refused action)."""
    if _wants_json(request):
        return JsonResponse(
            {"detail": "You do not have permission to do this.", "code": "permission_denied"}, status=403
        )
    return render(request, "403.html", {"reason": str(exception) if str(exception) else ""}, status=403)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    return render(request, "404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": "Internal server error.", "code": "server_error"}, status=500)
    return render(request, "500.html", status=500)
