"""Compute's portal pages: launch a VM (with what it does to the quotas and whether a host has room, before it is
sent), one VM's page (details, live state, how to reach it, firewall, events, console log, actions, volumes), actions
on several VMs at once, and the volume page's attach and detach (storage's page with compute's actions, DESIGN §1).
They call the same selectors and services as the API; errors are shown on the page they came from, in the service's
words."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.db.models import prefetch_related_objects
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import selectors as account_selectors
from accounts.models import Project
from accounts.quotas import quota_usage
from compute import access, attachments, execution, firewalls, scheduler, selectors, services
from compute.forms import BulkActionForm, FirewallRuleForm, LaunchForm
from compute.models import FirewallRule, Instance, InstanceState, InstanceType, Network, NetworkKind
from core.errors import ApplicationError, NotFound
from core.pages import error_pages, partial_login_required
from core.selectors import audit_entry_list
from marketplace import selectors as marketplace_selectors
from marketplace.models import Image
from marketplace.policy.evaluation import evaluate_all
from marketplace.policy.rules import Decision
from storage import selectors as storage_selectors
from storage.models import Volume, VolumeKind, VolumeState

S = InstanceState

# The actions of one VM: the service, the states it is offered in, and how the page says it.
ACTIONS: dict[str, tuple[Any, tuple[str, ...], str]] = {
    "start": (execution.instance_start, (S.STOPPED,), "Starting"),
    "shutdown": (execution.instance_shutdown, (S.RUNNING,), "Shutting down"),
    "reboot": (execution.instance_reboot, (S.RUNNING,), "Rebooting"),
    "kill": (execution.instance_kill, (S.RUNNING, S.BOOTING, S.STOPPING), "Powering off"),
    "terminate": (
        services.instance_terminate,
        tuple(s for s in S.values if s not in (S.TERMINATING, S.TERMINATED)),
        "Terminating",
    ),
}
# The states a VM moves on from by itself (a worker step): its page and the dashboard keep asking.
MOVING = (S.PENDING, S.SCHEDULED, S.PREPARING, S.BOOTING, S.STOPPING, S.TERMINATING)
# How much of the end of the console log the page shows.
CONSOLE_TAIL_BYTES = 16 * 1024
# How many images the launch page offers for one search (a search narrows them).
LAUNCH_IMAGES = 25
EVENTS_SHOWN = 50


def actions_offered(instance: Instance) -> list[str]:
    """The actions the VM's state allows now (the service checks again when one is asked for)."""
    return [name for name, (_service, states, _words) in ACTIONS.items() if instance.state in states]


@dataclass(frozen=True)
class Reach:
    """One way in to a VM from outside: ssh as a command to copy, a web service as a link, another service as the
    address and port to use."""

    service: str
    host: str
    port: int
    command: str = ""
    url: str = ""

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def instance_reach(instance: Instance) -> list[Reach]:
    """How to reach the VM from outside (:func:`compute.access.access_links`: translated ports on ``local``, its own
    address on ``public``, nothing on ``private``), as the API and the CLI show it."""
    return [
        Reach(link["service"], link["host"], link["port"], command=link.get("command", ""), url=link.get("url", ""))
        for link in access.access_links(instance)
    ]


# --- Launch -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageChoice:
    image: Image
    decision: Decision

    @property
    def allowed(self) -> bool:
        return self.decision.allowed


def _image_choices(*, q: str, show_denied: bool, chosen: str) -> list[ImageChoice]:
    """Machine images matching ``q`` with the site policy's decision on each; denied ones only when asked for (the
    chosen one is always offered, so that a page sent back with an error keeps it)."""
    images = marketplace_selectors.image_search(q=q, kind="machine", status="all")
    # With each image's SHA-256 claim, which the policy asks about (not one query per image).
    found = list(marketplace_selectors.with_sha256_claims(images)[: LAUNCH_IMAGES * 2])
    if chosen and chosen not in {image.identifier for image in found}:
        with contextlib.suppress(NotFound):
            found.insert(0, marketplace_selectors.image_get(identifier=chosen))
    choices = [ImageChoice(image, decision) for image, decision in evaluate_all(images=found)]
    shown = [c for c in choices if c.allowed or show_denied or c.image.identifier == chosen]
    return sorted(shown, key=lambda c: not c.allowed)[:LAUNCH_IMAGES]


def _launch_form(request: HttpRequest, data: Any = None) -> LaunchForm:
    projects = list(account_selectors.project_list(actor=request.user))
    usable = storage_selectors.volumes_visible_to(request.user).filter(
        kind__in=[VolumeKind.PERSISTENT, VolumeKind.STATIC], state=VolumeState.AVAILABLE
    )
    return LaunchForm(
        data,
        projects=[(p.pk, p.name) for p in projects],
        instance_types=selectors.instance_type_list(),
        networks=[kind for kind in NetworkKind.values if kind in set(Network.objects.values_list("kind", flat=True))],
        volumes=[(str(v.uuid), f"{v.name} ({v.kind}, {v.size_gib} GiB, project {v.project.name})") for v in usable],
        ssh_keys=[
            (str(k.pk), f"{k.name} ({k.fingerprint})") for k in account_selectors.ssh_key_list(actor=request.user)
        ],
        initial={"volatile_gib": 0},
    )


@dataclass(frozen=True)
class QuotaEffect:
    label: str
    used: int
    after: int
    limit: int

    @property
    def fits(self) -> bool:
        return self.after <= self.limit


def _quota_effects(
    *, project: Project, instance_type: InstanceType, network: str, volatile_gib: int
) -> list[QuotaEffect]:
    """What the request would add to each quota of ``project`` it touches (what ``instance_request`` reserves)."""
    asked = {
        "instances": 1,
        "vcpus": instance_type.vcpus,
        "ram_mib": instance_type.ram_mib,
        "public_ips": 1 if network == NetworkKind.PUBLIC else 0,
        "volume_gib": volatile_gib,
    }
    usage = quota_usage(project=project)
    return [
        QuotaEffect(label=usage[r].label, used=usage[r].used, after=usage[r].used + amount, limit=usage[r].limit)
        for r, amount in asked.items()
        if amount
    ]


def _preview(request: HttpRequest, data: Any) -> dict[str, Any]:
    """The quota effects and the room for the type chosen in ``data`` (a launch form as typed so far)."""
    context: dict[str, Any] = {"effects": [], "room": None, "problem": ""}
    project_id = data.get("project", "")
    type_name = data.get("instance_type", "")
    instance_type = selectors.instance_type_list().filter(name=type_name).first()
    try:
        project = account_selectors.access_project(actor=request.user, project_id=project_id)
    except NotFound:
        context["problem"] = "Choose one of your projects to see what the VM does to its quota."
        return context
    if instance_type is None:
        context["problem"] = "Choose an instance type to see what the VM does to the quota."
        return context
    volatile = data.get("volatile_gib", "0") or "0"
    volatile_gib = int(volatile) if volatile.isdigit() and len(volatile) < 7 else 0
    context["effects"] = _quota_effects(
        project=project, instance_type=instance_type, network=data.get("network", ""), volatile_gib=volatile_gib
    )
    context["room"] = next((r for r in scheduler.capacity() if r.instance_type.pk == instance_type.pk), None)
    context["instance_type"] = instance_type
    return context


@login_required
@require_http_methods(["GET", "POST"])
def instance_launch(request: HttpRequest) -> HttpResponse:
    """The launch page: choose an allowed image, a type, a network, volumes, keys and user data, and request the VM."""
    form = _launch_form(request, request.POST or None)
    if request.method == "POST" and form.is_valid():
        values = form.cleaned_data
        try:
            instance = _launch(request.user, values)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"VM {instance.name} is requested on host {instance.host}; it starts now.")
            return redirect("instance", instance_id=instance.uuid)
    source = request.POST if request.method == "POST" else request.GET
    q = request.GET.get("q", "").strip()[:200]
    show_denied = request.GET.get("denied") == "1"
    context = {
        "form": form,
        "q": q,
        "show_denied": show_denied,
        "choices": _image_choices(q=q, show_denied=show_denied, chosen=source.get("image", "")),
        "chosen_image": source.get("image", ""),
        "has_projects": bool(form.fields["project"].choices),
        **_preview(request, form.data if form.is_bound else _initial(form)),
    }
    return render(request, "compute/launch.html", context, status=400 if form.errors else 200)


def _initial(form: LaunchForm) -> dict[str, str]:
    """The values the unbound form shows first, as a preview reads them."""
    first_project = form.fields["project"].choices[0][0] if form.fields["project"].choices else ""
    first_network = form.fields["network"].choices[0][0] if form.fields["network"].choices else ""
    return {
        "project": str(first_project),
        "instance_type": str(form.fields["instance_type"].initial or ""),
        "network": str(first_network),
        "volatile_gib": "0",
    }


def _launch(actor: User, values: dict[str, Any]) -> Instance:
    project = account_selectors.access_project(actor=actor, project_id=values["project"])
    try:
        image = marketplace_selectors.image_get(identifier=values["image"].strip())
    except NotFound:
        raise ApplicationError(
            "There is no such image in the Marketplace; choose one from the list.", code="image-unknown"
        ) from None
    instance_type = selectors.instance_type_list().filter(name=values["instance_type"]).first()
    if instance_type is None:
        raise ApplicationError(f"Instance type {values['instance_type']} is not offered.", code="instance-type")
    return services.instance_request(
        actor=actor,
        project=project,
        image=image,
        instance_type=instance_type,
        network=values["network"],
        ssh_keys=values["ssh_keys"],
        user_data=values["user_data"],
        volatile_gib=values["volatile_gib"],
        name=values["name"],
        volumes=values["volumes"],
    )


@partial_login_required
@require_GET
def instance_launch_preview(request: HttpRequest) -> HttpResponse:
    """The launch page's preview (an htmx partial, sent again whenever the form changes)."""
    return render(request, "compute/_launch_preview.html", _preview(request, request.GET))


# --- One instance -----------------------------------------------------------------------------------------------


def _attachable(request: HttpRequest, instance: Instance) -> list[Volume]:
    """The volumes of the VM's project that it could take now (persistent and static, available, not in it)."""
    if instance.state not in attachments.PLUGGABLE:
        return []
    held = [a.volume_uuid for a in instance.attachments.all()]
    return list(
        storage_selectors.volumes_visible_to(request.user)
        .filter(project_id=instance.project_id, kind__in=[VolumeKind.PERSISTENT, VolumeKind.STATIC])
        .filter(state=VolumeState.AVAILABLE)
        .exclude(uuid__in=held)
    )


def _status_context(request: HttpRequest, instance: Instance) -> dict[str, Any]:
    # The firewall rules are read once, for the links of a VM on ``public`` and the page's firewall section.
    prefetch_related_objects([instance], "firewall_rules")
    attached = list(instance.attachments.all())
    names = dict(
        storage_selectors.volumes_visible_to(request.user)
        .filter(uuid__in=[a.volume_uuid for a in attached])
        .values_list("uuid", "name")
    )
    return {
        "instance": instance,
        "actions": actions_offered(instance),
        "moving": instance.state in MOVING,
        "attached": [(a, names.get(a.volume_uuid, "")) for a in attached],
        "detachable": instance.state in attachments.PLUGGABLE,
        "reach": instance_reach(instance),
    }


@login_required
@error_pages
@require_GET
def instance_show(request: HttpRequest, instance_id: str) -> HttpResponse:
    """One VM: its details and state (kept live), actions, volumes, events and console log."""
    instance = selectors.access_instance(actor=request.user, instance_id=instance_id)
    return _instance_page(request, instance)


def _instance_page(
    request: HttpRequest, instance: Instance, *, firewall_form: FirewallRuleForm | None = None, status: int = 200
) -> HttpResponse:
    context = _status_context(request, instance)
    return render(
        request,
        "compute/instance.html",
        {
            **context,
            "attachable": _attachable(request, instance),
            "events": _events(instance),
            "image": instance.image,
            "firewall_rules": list(instance.firewall_rules.all()),
            "firewall_form": firewall_form or FirewallRuleForm(),
            "firewall_user_ports": _user_ports(),
        },
        status=status,
    )


def _user_ports() -> str:
    """The ports the site lets users open, as the page says them ("22, 80, 443, 1024-65535")."""
    return ", ".join(f"{low}-{high}" if low != high else str(low) for low, high in settings.FIREWALL_USER_PORTS)


def _events(instance: Instance) -> list[tuple[Any, list[tuple[str, Any]]]]:
    """The newest audit entries about the VM, each with the details worth showing (empty values left out)."""
    # The audit log is staff's; its entries about this one VM are the VM's events, for whoever may see the VM.
    entries = audit_entry_list().filter(
        content_type=ContentType.objects.get_for_model(Instance), object_id=str(instance.pk)
    )[:EVENTS_SHOWN]
    return [(e, [(k, v) for k, v in e.details.items() if v or v == 0]) for e in entries]


@partial_login_required
@error_pages
@require_GET
def instance_status(request: HttpRequest, instance_id: str) -> HttpResponse:
    """The VM page's live part (state, addresses, CPU, actions, volumes): an htmx partial the page polls, with the
    events table sent along out of band."""
    instance = selectors.access_instance(actor=request.user, instance_id=instance_id)
    context = {**_status_context(request, instance), "events": _events(instance), "oob": True}
    return render(request, "compute/_instance_status.html", context)


@partial_login_required
@error_pages
@require_GET
def instance_console_tail(request: HttpRequest, instance_id: str) -> HttpResponse:
    """The end of the VM's console log, asked of its host's worker (an htmx partial); a clear line when the host
    does not answer."""
    instance = selectors.access_instance(actor=request.user, instance_id=instance_id)
    text, problem = "", ""
    if instance.host is None or instance.state in (S.PENDING, S.TERMINATED):
        problem = "This VM has no console log: it is not on a host."
    else:
        try:
            text = execution.instance_console(instance=instance, max_bytes=CONSOLE_TAIL_BYTES)
        except ApplicationError as exc:
            problem = f"The console log cannot be read now: {exc.message}."
    return render(request, "compute/_console.html", {"instance": instance, "text": text, "problem": problem})


@login_required
@error_pages
@require_POST
def instance_action(request: HttpRequest, instance_id: str, action: str) -> HttpResponse:
    """``start``, ``shutdown``, ``reboot``, ``kill`` or ``terminate`` the VM, then back to where the user was."""
    instance = selectors.access_instance(actor=request.user, instance_id=instance_id)
    service, _states, words = ACTIONS[action]
    try:
        service(actor=request.user, instance=instance)
    except ApplicationError as exc:
        messages.error(request, f"VM {instance.name} was not changed: {exc.message}.")
    else:
        messages.success(request, f"{words} VM {instance.name}.")
    return redirect(_back(request, instance))


def _rule_words(rule: FirewallRule) -> str:
    """A rule as the page says it: "tcp port 8080 from 198.51.100.0/24", "icmp from anywhere"."""
    port = f" port {rule.port}" if rule.port is not None else ""
    source = "anywhere" if rule.source == "0.0.0.0/0" else rule.source
    return f"{rule.protocol}{port} from {source}"


@login_required
@error_pages
@require_POST
def instance_firewall_add(request: HttpRequest, instance_id: str) -> HttpResponse:
    """Add the rule typed in the VM page's firewall form (through the service the API calls, which asks the front
    end to apply it); a refusal is shown on the page with what was typed, and changes nothing."""
    instance = selectors.access_instance(actor=request.user, instance_id=instance_id)
    form = FirewallRuleForm(request.POST)
    if form.is_valid():
        try:
            rule = firewalls.firewall_rule_add(actor=request.user, instance=instance, **form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, f"The rule was not added: {exc.message}.")
        else:
            messages.success(request, f"VM {instance.name} now lets in {_rule_words(rule)}.")
            return redirect(reverse("instance", kwargs={"instance_id": instance.uuid}) + "#firewall")
    return _instance_page(request, instance, firewall_form=form, status=400)


@login_required
@error_pages
@require_POST
def instance_firewall_delete(request: HttpRequest, instance_id: str, rule_id: str) -> HttpResponse:
    """Delete one rule of the VM's firewall (an image's rule too: the owners decide)."""
    instance = selectors.access_instance(actor=request.user, instance_id=instance_id)
    # Read first, to say which rule went; the service decides whether it may go.
    rule = next((r for r in instance.firewall_rules.all() if str(r.pk) == rule_id), None)
    try:
        firewalls.firewall_rule_delete(actor=request.user, instance=instance, rule_id=rule_id)
    except ApplicationError as exc:
        messages.error(request, f"The firewall of VM {instance.name} was not changed: {exc.message}.")
    else:
        words = _rule_words(rule) if rule is not None else "the rule"
        messages.success(request, f"VM {instance.name} no longer lets in {words}.")
    return redirect(reverse("instance", kwargs={"instance_id": instance.uuid}) + "#firewall")


def _back(request: HttpRequest, instance: Instance) -> str:
    """The dashboard when the action was asked there, the VM's page otherwise (never a URL the form chose)."""
    if request.POST.get("back") == "dashboard":
        return reverse("home")
    return reverse("instance", kwargs={"instance_id": instance.uuid})


@login_required
@error_pages
@require_POST
def instance_volume(request: HttpRequest, instance_id: str, action: str) -> HttpResponse:
    """``attach`` the volume named in the form (``volume``) to the VM, or ``detach`` it."""
    instance = selectors.access_instance(actor=request.user, instance_id=instance_id)
    volume_id = request.POST.get("volume", "")
    act = attachments.instance_attach if action == "attach" else attachments.instance_detach
    try:
        volume = storage_selectors.access_volume(actor=request.user, volume_id=volume_id)
        act(actor=request.user, instance=instance, volume_id=str(volume.uuid))
    except NotFound:
        messages.error(request, "Choose one of your volumes first.")
    except ApplicationError as exc:
        messages.error(request, f"Volume not {action}ed: {exc.message}.")
    else:
        verb = "Attaching" if action == "attach" else "Detaching"
        messages.success(
            request, f"{verb} volume {volume.name} {'to' if action == 'attach' else 'from'} VM {instance.name}."
        )
    return redirect("instance", instance_id=instance.uuid)


@login_required
@require_POST
def instance_bulk_action(request: HttpRequest) -> HttpResponse:
    """Shut down or terminate the VMs checked on the dashboard, each through its service; what could not be done is
    said per VM, and the others still go ahead."""
    form = BulkActionForm(request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
        return redirect("home")
    action = form.cleaned_data["action"]
    service, _states, words = ACTIONS[action]
    done: list[str] = []
    for instance_id in form.cleaned_data["instances"]:
        try:
            instance = selectors.access_instance(actor=request.user, instance_id=instance_id)
        except NotFound:
            messages.error(request, f"{instance_id[:36]}: no such VM in your projects.")
            continue
        try:
            service(actor=request.user, instance=instance)
        except ApplicationError as exc:
            messages.error(request, f"VM {instance.name} was not changed: {exc.message}.")
        else:
            done.append(instance.name)
    if done:
        messages.success(request, f"{words} {len(done)} VM{'s' if len(done) != 1 else ''}: {', '.join(done)}.")
    return redirect("home")


# --- The volume page (storage's, with compute's attach and detach) ---------------------------------------------


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
