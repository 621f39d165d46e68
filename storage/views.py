"""Storage pages: the volumes of the user's projects (list and request), one volume (show, delete). They call
the same selectors and services as the API. Attaching and detaching are compute's (the show page leaves them
their place)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts import selectors as account_selectors
from core.errors import ApplicationError, NotFound
from core.pages import error_pages
from marketplace import selectors as marketplace_selectors
from storage import selectors, services
from storage.forms import VolumeForm

PAGE_SIZE = 25


@login_required
@error_pages
@require_http_methods(["GET", "POST"])
def volume_list(request: HttpRequest) -> HttpResponse:
    projects = list(account_selectors.project_list(actor=request.user))
    form = VolumeForm(request.POST or None, projects=[(p.pk, p.name) for p in projects])
    if request.method == "POST" and form.is_valid():
        values = form.cleaned_data
        try:
            project = account_selectors.access_project(actor=request.user, project_id=values["project"])
            image = None
            if values["image"]:
                try:
                    image = marketplace_selectors.image_get(identifier=values["image"].strip())
                except NotFound:
                    raise ApplicationError("no such image in the Marketplace", code="image-unknown") from None
            volume = services.volume_create(
                actor=request.user,
                project=project,
                name=values["name"],
                size_gib=values["size_gib"],
                kind=values["kind"],
                image=image,
                backend=values["backend"] or None,
            )
        except ApplicationError as exc:
            form.add_error(None, f"{exc.message} ({exc.code})")
        else:
            messages.success(request, f"Volume {volume.name} requested; it is being made.")
            return redirect("storage-volume", volume_id=volume.uuid)
    page = Paginator(selectors.volumes_visible_to(request.user), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "storage/volumes.html",
        {"form": form, "page": page, "volumes": page.object_list, "has_projects": bool(projects)},
        status=400 if form.errors else 200,
    )


@login_required
@error_pages
def volume_show(request: HttpRequest, volume_id: str) -> HttpResponse:
    volume = selectors.access_volume(actor=request.user, volume_id=volume_id)
    return render(request, "storage/volume.html", {"volume": volume, "attached_to": selectors.volume_holders(volume)})


@login_required
@error_pages
@require_POST
def volume_delete(request: HttpRequest, volume_id: str) -> HttpResponse:
    volume = selectors.access_volume(actor=request.user, volume_id=volume_id)
    try:
        services.volume_delete(actor=request.user, volume=volume)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Volume {volume.name} is being deleted.")
    return redirect("storage-volume", volume_id=volume.uuid)
