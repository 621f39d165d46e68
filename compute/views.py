"""Compute's portal pages. For now the volume page's attach and detach (DESIGN §1: compute's actions): the page
storage shows for a volume, with a form to attach it to one of the user's VMs of its project and a button per VM
to detach it. They call the same services as the API."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from compute import attachments, selectors
from compute.models import Instance
from core.errors import ApplicationError
from core.pages import error_pages
from storage import selectors as storage_selectors


@login_required
@error_pages
def volume_show(request: HttpRequest, volume_id: str) -> HttpResponse:
    """Storage's volume page with compute's actions: attach to a running or stopped VM of the volume's project,
    detach from the VMs that hold it."""
    volume = storage_selectors.access_volume(actor=request.user, volume_id=volume_id)
    holders = storage_selectors.volume_holders(volume)
    mine = selectors.instance_list(actor=request.user).filter(project_id=volume.project_id)
    holding = {str(i.uuid): i for i in mine.filter(uuid__in=holders)}
    can_attach = volume.kind != "volatile" and (
        volume.state == "available" or (volume.kind == "static" and volume.state == "in-use")
    )
    attachable = list(mine.filter(state__in=attachments.PLUGGABLE).exclude(uuid__in=holders)) if can_attach else []
    return render(
        request,
        "compute/volume.html",
        {
            "volume": volume,
            "attached_to": holders,
            "holding": [(holder, holding.get(holder)) for holder in holders],
            "attachable": attachable,
            "detachable": volume.kind != "volatile",
        },
    )


@login_required
@error_pages
@require_POST
def volume_action(request: HttpRequest, volume_id: str, action: str) -> HttpResponse:
    """``attach`` the volume to the VM named in the form (``instance``), or ``detach`` it from that VM."""
    volume = storage_selectors.access_volume(actor=request.user, volume_id=volume_id)
    instance = selectors.access_instance(actor=request.user, instance_id=request.POST.get("instance", ""))
    act = attachments.instance_attach if action == "attach" else attachments.instance_detach
    try:
        act(actor=request.user, instance=instance, volume_id=str(volume.uuid))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        verb = "Attaching" if action == "attach" else "Detaching"
        messages.success(
            request, f"{verb} volume {volume.name} {'to' if action == 'attach' else 'from'} {_name(instance)}."
        )
    return redirect("storage-volume", volume_id=volume.uuid)


def _name(instance: Instance) -> str:
    return f"VM {instance.name}"
