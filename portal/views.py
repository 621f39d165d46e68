from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from compute import trust
from core.pages import error_pages
from portal import health


def home(request: HttpRequest) -> HttpResponse:
    """The researcher's start page, with the notices about images their VMs run from that lost the site's trust."""
    return render(request, "portal/home.html", {"trust_notices": list(trust.trust_notices_open(user=request.user))})


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
