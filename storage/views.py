"""Storage pages: the volumes of the user's projects (list and request, with what a request does to the project's
quotas before it is sent), one volume (show, delete); the volumes table and a volume's state are kept live by htmx
partials. They call the same selectors and services as the API. Attaching and detaching are compute's (the show page
leaves them their place)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRefresh

from accounts import selectors as account_selectors
from accounts.models import Project
from accounts.quotas import ResourceUsage, quota_usage, quotas_usage
from core.errors import ApplicationError, NotFound
from core.pages import error_pages, partial_login_required
from marketplace import selectors as marketplace_selectors
from storage import selectors, services
from storage.forms import VolumeForm
from storage.models import Volume, VolumeKind, VolumeState

PAGE_SIZE = 25
# The states a volume moves on from by itself (a worker step): the pages ask every 2 s while one is in them.
MOVING = (VolumeState.CREATING, VolumeState.ATTACHING, VolumeState.DETACHING, VolumeState.DELETING)
# How the preview names the quotas a volume request touches.
QUOTA_WORDS = {"volumes": "Volumes", "volume_gib": "Volume GiB"}


# --- The new-volume preview -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuotaEffect:
    """What a request does to one quota: ``used`` → ``used + amount`` of ``limit``."""

    label: str
    usage: ResourceUsage
    amount: int

    @property
    def used(self) -> int:
        return self.usage.used

    @property
    def after(self) -> int:
        return self.usage.used + self.amount

    @property
    def limit(self) -> int:
        return self.usage.limit

    @property
    def fits(self) -> bool:
        return self.amount <= self.usage.available

    @property
    def left(self) -> int:
        return self.usage.available


def _size_problem(text: str) -> str:
    most = settings.STORAGE_VOLUME_MAX_GIB
    shown = text if len(text) <= 20 else f"{text[:20]}…"
    return f"The size is a whole number of GiB from 1 to {most}; “{shown}” is not one."


def _asked_size(data: Any) -> tuple[int | None, str]:
    """The size the form asks for (``None`` when left empty) or a sentence saying why it is not a size."""
    text = str(data.get("size_gib", "") or "").strip()
    if not text:
        return None, ""
    if not text.isdigit() or len(text) > 9 or not 1 <= int(text) <= settings.STORAGE_VOLUME_MAX_GIB:
        return None, _size_problem(text)
    return int(text), ""


def _preview(request: HttpRequest, data: Any) -> dict[str, Any]:
    """What the volume typed so far in ``data`` does to its project's quotas, or a sentence saying what to fix
    first. Only a project the user is a member of is counted (any other reads as not chosen)."""
    context: dict[str, Any] = {"effects": [], "problem": "", "size_gib": None}
    try:
        project: Project = account_selectors.access_project(actor=request.user, project_id=data.get("project", ""))
    except NotFound:
        context["problem"] = "Choose one of your projects to see what the volume does to its quota."
        return context
    size_gib, problem = _asked_size(data)
    if problem:
        context["problem"] = problem
        return context
    kind = data.get("kind", VolumeKind.PERSISTENT)
    if kind == VolumeKind.STATIC:
        identifier = str(data.get("image", "") or "").strip()[:27]
        if not identifier:
            context["problem"] = "Name the Marketplace disk image a static volume copies to see its size."
            return context
        try:
            image = marketplace_selectors.image_get(identifier=identifier)
        except NotFound:
            context["problem"] = "There is no such image in the Marketplace; give a disk image's identifier."
            return context
        if image.kind != "disk":
            context["problem"] = f"Image {image.identifier} is a machine image; a static volume copies a disk image."
            return context
        needed = services.image_size_gib(image)
        if size_gib is not None and size_gib < needed:
            context["problem"] = f"Image {image.identifier} needs {needed} GiB; {size_gib} GiB is too small."
            return context
        size_gib = size_gib or needed
    elif kind != VolumeKind.PERSISTENT:
        context["problem"] = "Choose persistent or static."
        return context
    elif size_gib is None:
        context["problem"] = f"Give the size in GiB (1 to {settings.STORAGE_VOLUME_MAX_GIB}) to see what it takes."
        return context
    usage = quota_usage(project=project)
    context["effects"] = [
        QuotaEffect(label=QUOTA_WORDS[resource], usage=usage[resource], amount=amount)
        for resource, amount in (("volumes", 1), ("volume_gib", size_gib))
    ]
    context["project"] = project
    context["size_gib"] = size_gib
    context["fits"] = all(e.fits for e in context["effects"])
    return context


def _initial(form: VolumeForm) -> dict[str, str]:
    """The values the unbound form shows first, as the preview reads them."""
    choices = form.fields["project"].choices
    return {"project": str(choices[0][0]) if choices else "", "kind": VolumeKind.PERSISTENT, "size_gib": ""}


@partial_login_required
@require_GET
def volume_preview(request: HttpRequest) -> HttpResponse:
    """The new-volume form's preview (an htmx partial, sent again whenever the form changes)."""
    return render(request, "storage/_preview.html", _preview(request, request.GET))


# --- The volumes table, live ------------------------------------------------------------------------------------


def _table(request: HttpRequest) -> dict[str, Any]:
    """One page of the user's volumes with their holders and projects, and whether one is moving: a fixed number
    of queries for any number of volumes."""
    page = Paginator(selectors.volumes_visible_to(request.user), PAGE_SIZE).get_page(request.GET.get("page"))
    volumes: list[Volume] = list(page.object_list)
    return {"page": page, "volumes": volumes, "moving": any(v.state in MOVING for v in volumes)}


@partial_login_required
@require_GET
def volume_rows(request: HttpRequest) -> HttpResponse:
    """The volumes table alone: the htmx partial the volumes page polls for live states."""
    return render(request, "storage/_volumes.html", _table(request))


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
    usage = quotas_usage(projects=projects)
    quotas = [(p, usage[p.pk]["volumes"], usage[p.pk]["volume_gib"]) for p in projects]
    context = {
        "form": form,
        "has_projects": bool(projects),
        "quotas": quotas,
        **_table(request),
        **_preview(request, form.data if form.is_bound else _initial(form)),
    }
    return render(request, "storage/volumes.html", context, status=400 if form.errors else 200)


@login_required
@error_pages
def volume_show(request: HttpRequest, volume_id: str) -> HttpResponse:
    volume = selectors.access_volume(actor=request.user, volume_id=volume_id)
    return render(request, "storage/volume.html", {"volume": volume, "attached_to": selectors.volume_holders(volume)})


@partial_login_required
@error_pages
@require_GET
def volume_status(request: HttpRequest, volume_id: str) -> HttpResponse:
    """A volume page's live state (an htmx partial the page polls). When the state is no longer the one the page
    was drawn with (``?was=``), the whole page is reloaded, so that its actions match the new state."""
    volume = selectors.access_volume(actor=request.user, volume_id=volume_id)
    was = request.GET.get("was")
    if was is not None and was != volume.state and getattr(request, "htmx", False):
        return HttpResponseClientRefresh()
    return render(request, "storage/_volume_status.html", {"volume": volume, "moving": volume.state in MOVING})


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
