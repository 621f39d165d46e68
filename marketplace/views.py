"""Marketplace pages, and the staff console of images and site policy. Each calls the same selectors and
services as the API."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core.errors import ApplicationError, NotFound
from core.pages import CountedPaginator, error_pages, fetched_page, page_number, staff_required
from marketplace import metadata, policy, selectors, services, usage
from marketplace.downloads import signed_download_headers
from marketplace.filters import EndorserFilter, ImageSearchFilter
from marketplace.forms import (
    EntryUploadForm,
    PgpKeyForm,
    SiteDeprecateForm,
    SiteEndorseForm,
)
from marketplace.models import Entry, Image
from marketplace.policy import PolicyInvalid, PolicyRules, read_rules, verdicts
from marketplace.policy import services as policy_services
from marketplace.policy.forms import PolicyCfgForm, PolicyForm

PAGE_SIZE = 25


def _mark(entries: Iterable[Entry], now: dt.datetime) -> list[Entry]:
    """Attach each entry's status now as ``status_now`` for the templates."""
    marked = list(entries)
    for entry in marked:
        entry.status_now = selectors.entry_status(entry, now=now)  # type: ignore[attr-defined]
    return marked


def entry_url(entry: Entry, name: str = "marketplace-entry") -> str:
    return reverse(name, args=[entry.image.identifier, entry.endorser.email, entry.created_text])


def search(request: HttpRequest) -> HttpResponse:
    """The search form and one page of what it finds, fetched as the API's pages are (``image_search_page``: the
    database finds the page the way that pays, and says "about" when it estimates a long list's length)."""
    filters = ImageSearchFilter(request.GET or None, queryset=selectors.image_list())
    number = page_number(request.GET.get("page"), per_page=PAGE_SIZE)
    refusal = None
    if filters.is_bound and not filters.is_valid():
        page = fetched_page([], number=1, per_page=PAGE_SIZE, has_next=False, count=0)
    else:
        bound = filters.is_bound
        try:
            found = selectors.image_search_page(
                filters.criteria() if bound else selectors.SearchCriteria(),
                ordering=filters.sort_order() if bound else selectors.DEFAULT_ORDERING,
                offset=(number - 1) * PAGE_SIZE,
                limit=PAGE_SIZE,
            )
        except selectors.SearchTooDeep as exc:
            found = selectors.SearchPage([], False, selectors.Counted(0, False))
            refusal = exc.message
        for image in found.images:
            image["current_count"] = sum(entry["status"] == "valid" for entry in image["latest"])
        page = fetched_page(
            found.images,
            number=number,
            per_page=PAGE_SIZE,
            has_next=found.has_next,
            count=found.count.value,
            count_is_estimate=found.count.is_estimate,
        )
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "marketplace/search.html",
        {"filters": filters, "page": page, "query": query.urlencode(), "refusal": refusal},
    )


@error_pages
def image_detail(request: HttpRequest, identifier: str) -> HttpResponse:
    now = timezone.now()
    image = selectors.image_get(identifier=identifier)
    entries = _mark(image.latest_entries, now)  # type: ignore[attr-defined]
    current = [e for e in entries if e.status_now == "valid"]  # type: ignore[attr-defined]
    decision = policy.evaluate(image, now=now)
    shown = selectors.image_show(image, now=now)
    context = {
        "image": image,
        "entries": entries,
        "current": current,
        "decision": decision,
        "shown": shown,
        "differing": selectors.image_claims_differing(image),
    }
    return render(request, "marketplace/image.html", context)


def _entry(identifier: str, email: str, created: str) -> Entry:
    return selectors.entry_get(identifier=identifier, email=email, created=selectors.parse_created(created))


@error_pages
def entry_detail(request: HttpRequest, identifier: str, email: str, created: str) -> HttpResponse:
    now = timezone.now()
    entry = _entry(identifier, email, created)
    _mark([entry], now)
    timeline = _mark(selectors.entry_timeline(entry=entry), now)
    return render(
        request,
        "marketplace/entry.html",
        {
            "entry": entry,
            "timeline": timeline,
            "download_url": entry_url(entry, "marketplace-entry-download"),
            "document": bytes(entry.raw).decode("utf-8", errors="replace"),
        },
    )


@error_pages
def entry_download(request: HttpRequest, identifier: str, email: str, created: str) -> HttpResponse:
    """The original signed bytes, as a file."""
    entry = _entry(identifier, email, created)
    return HttpResponse(
        bytes(entry.raw), content_type="application/rdf+xml", headers=signed_download_headers(identifier, created)
    )


def endorser_list(request: HttpRequest) -> HttpResponse:
    filters = EndorserFilter(request.GET or None, queryset=selectors.endorser_list())
    endorsers = filters.qs if filters.is_bound and filters.is_valid() else selectors.endorser_list()
    page = Paginator(endorsers, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "marketplace/endorsers.html", {"filters": filters, "page": page})


@error_pages
def endorser_history(request: HttpRequest, email: str) -> HttpResponse:
    now = timezone.now()
    endorser = selectors.endorser_get(email=email)
    page = Paginator(selectors.endorser_history(endorser=endorser), PAGE_SIZE).get_page(request.GET.get("page"))
    _mark(page.object_list, now)
    return render(request, "marketplace/endorser.html", {"endorser": endorser, "page": page})


@login_required
@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    form = EntryUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            entry = services.entry_upload(raw=form.cleaned_data["document"], uploader=request.user)
        except ApplicationError as exc:
            form.add_error("document", f"{exc.message} ({exc.code})")
        else:
            messages.success(request, f"Entry for {entry.image.identifier} by {entry.endorser.email} uploaded.")
            return redirect(entry_url(entry))
    return render(request, "marketplace/upload.html", {"form": form}, status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def pgp_keys(request: HttpRequest) -> HttpResponse:
    form = PgpKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            key = services.pgp_key_register(actor=request.user, armored=form.cleaned_data["armored"])
        except ApplicationError as exc:
            form.add_error("armored", f"{exc.message} ({exc.code})")
        else:
            messages.success(request, f"Key {key.fingerprint} registered.")
            return redirect("marketplace-pgp-keys")
    keys = selectors.pgp_key_list(actor=request.user)
    return render(request, "marketplace/keys.html", {"form": form, "keys": keys}, status=400 if form.errors else 200)


@login_required
@error_pages
@require_POST
def pgp_key_revoke(request: HttpRequest, fingerprint: str) -> HttpResponse:
    _revoke_key(request, fingerprint)
    return redirect("marketplace-pgp-keys")


def _revoke_key(request: HttpRequest, fingerprint: str) -> None:
    """Revoke through the service and say how it went; a key the user may not see is a 404 (the caller is
    wrapped in ``error_pages``)."""
    try:
        key = services.pgp_key_revoke(actor=request.user, fingerprint=fingerprint)
    except NotFound:
        raise
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Key {key.fingerprint} ({key.owner.get_username()}) revoked.")


# --- Staff console: images, their review, the site's endorsements, the policy, the site key ----------------

VERDICT_FILTERS = {
    "all": "All images",
    "denied": "Denied",
    "warnings": "Allowed despite failed rules",
    "allowed": "Allowed, every rule passed",
}


@staff_required
@require_GET
def console_images(request: HttpRequest) -> HttpResponse:
    """Every image with the active policy's verdict, filterable by verdict."""
    verdict = request.GET.get("verdict", "all")
    if verdict not in VERDICT_FILTERS:
        verdict = "all"
    # Unfiltered, every image; else the kept verdicts answer the filter. Only the page shown is evaluated (for its
    # reasons); a long list is counted by the database's estimate.
    found = selectors.images_for_evaluation()
    waiting = None
    if verdict != "all":
        waiting = verdicts.verdict_filter(verdict)
        found = found.filter(waiting.q)
    counted = selectors.rows_count(found)
    paginator = CountedPaginator(found, PAGE_SIZE, count=counted.value, count_is_estimate=counted.is_estimate)
    page = paginator.get_page(request.GET.get("page"))
    page.object_list = [
        {"image": image, "decision": decision} for image, decision in policy.evaluate_all(images=page.object_list)
    ]
    return render(
        request,
        "marketplace/console_images.html",
        {
            "page": page,
            "verdict": verdict,
            "filters": VERDICT_FILTERS,
            "policy_row": selectors.policy_active(),
            "waiting": waiting,
        },
    )


def _review(request: HttpRequest, image: Image, *, status: int = 200, **forms: Any) -> HttpResponse:
    now = timezone.now()
    timelines = [(endorser, _mark(entries, now)) for endorser, entries in selectors.image_timelines(image=image)]
    site_key = selectors.site_key_get()
    site_latest = next(
        (entries[0] for endorser, entries in timelines if site_key and endorser.email == site_key.email), None
    )
    # Registered keys that signed one of the image's latest entries and still count: revocable from here.
    keys = {e.key.pk: e.key for e in image.latest_entries if e.key is not None and e.key.revoked_at is None}  # type: ignore[attr-defined]
    shown = selectors.image_show(image, now=now)
    context = {
        "image": image,
        "shown": shown,
        "differing": selectors.image_claims_differing(image),
        "decision": policy.evaluate(image, now=now),
        "uses": usage.image_uses(image.pk),
        "timelines": timelines,
        "site_key": site_key,
        "site_latest": site_latest,
        "keys": list(keys.values()),
        "endorse_form": forms.get("endorse_form") or SiteEndorseForm(),
        "deprecate_form": forms.get("deprecate_form") or SiteDeprecateForm(),
    }
    return render(request, "marketplace/console_image.html", context, status=status)


@staff_required
@error_pages
@require_GET
def console_image(request: HttpRequest, identifier: str) -> HttpResponse:
    """One image for review: its metadata, every endorser's timeline, the policy's decision, the actions."""
    return _review(request, selectors.image_get(identifier=identifier))


@staff_required
@error_pages
@require_POST
def console_image_endorse(request: HttpRequest, identifier: str) -> HttpResponse:
    image = selectors.image_get(identifier=identifier)
    form = SiteEndorseForm(request.POST)
    if not form.is_valid():
        return _review(request, image, status=400, endorse_form=form)
    try:
        services.image_site_endorse(
            actor=request.user,
            image=image,
            valid_until=form.cleaned_data["valid_until"],
            reason=form.cleaned_data["reason"],
        )
    except ApplicationError as exc:
        messages.error(request, f"The site did not endorse {image.identifier}: {exc.message}")
    else:
        messages.success(request, f"{image.identifier} is endorsed with the site key.")
    return redirect("marketplace-console-image", image.identifier)


@staff_required
@error_pages
@require_POST
def console_image_deprecate(request: HttpRequest, identifier: str) -> HttpResponse:
    image = selectors.image_get(identifier=identifier)
    form = SiteDeprecateForm(request.POST)
    if not form.is_valid():
        return _review(request, image, status=400, deprecate_form=form)
    try:
        services.image_site_deprecate(actor=request.user, image=image, reason=form.cleaned_data["reason"])
    except ApplicationError as exc:
        messages.error(request, f"The site's endorsement was not deprecated: {exc.message}")
    else:
        messages.success(request, f"The site's endorsement of {image.identifier} is deprecated.")
    return redirect("marketplace-console-image", image.identifier)


@staff_required
@error_pages
@require_POST
def console_key_revoke(request: HttpRequest, fingerprint: str) -> HttpResponse:
    """Revoke an endorser's key, then go back to the image being reviewed (if any)."""
    _revoke_key(request, fingerprint)
    identifier = request.POST.get("identifier", "")
    if metadata.is_identifier(identifier):
        return redirect("marketplace-console-image", identifier)
    return redirect("marketplace-console")


def _policy_page(
    request: HttpRequest,
    *,
    form: PolicyForm | None = None,
    cfg_form: PolicyCfgForm | None = None,
    preview: dict[str, Any] | None = None,
    status: int = 200,
) -> HttpResponse:
    row = selectors.policy_active()
    active = PolicyRules.from_json(row.rules) if row else PolicyRules()
    context = {
        "policy_row": row,
        "active_json": json.dumps(active.to_json(), indent=2),
        "form": form or PolicyForm(initial=PolicyForm.initial_from(active.to_json())),
        "cfg_form": cfg_form or PolicyCfgForm(),
        "preview": preview,
        "history": selectors.policy_history(limit=20),
    }
    return render(request, "marketplace/console_policy.html", context, status=status)


def _preview(rules: PolicyRules, *, note: str, source: str) -> dict[str, Any]:
    """The dry run of ``rules`` and what the confirm form carries back."""
    row = selectors.policy_active()
    return {
        "result": policy.dry_run(rules),
        "rules_json": json.dumps(rules.to_json()),
        "rules_pretty": json.dumps(rules.to_json(), indent=2),
        "based_on": row.pk if row else 0,
        "note": note,
        "source": source,
    }


@staff_required
@require_http_methods(["GET", "POST"])
def console_policy(request: HttpRequest) -> HttpResponse:
    """The policy: edit it in a form, see the dry run, then confirm (``console_policy_confirm``)."""
    if request.method == "GET":
        return _policy_page(request)
    form = PolicyForm(request.POST)
    if not form.is_valid():
        return _policy_page(request, form=form, status=400)
    try:
        rules = PolicyRules.from_json(form.rules_json())
    except PolicyInvalid as exc:
        form.add_rule_errors(exc.extra.get("errors", {}))
        return _policy_page(request, form=form, status=400)
    return _policy_page(request, form=form, preview=_preview(rules, note=form.cleaned_data["note"], source="form"))


@staff_required
@require_POST
def console_policy_import(request: HttpRequest) -> HttpResponse:
    """Read a StratusLab policy.cfg and show its dry run; nothing changes until it is confirmed."""
    cfg_form = PolicyCfgForm(request.POST, request.FILES)
    if not cfg_form.is_valid():
        return _policy_page(request, cfg_form=cfg_form, status=400)
    try:
        rules = policy_services.policy_rules_from_cfg(text=cfg_form.cleaned_data["policy_cfg"])
    except PolicyInvalid as exc:
        cfg_form.add_error("policy_cfg", exc.message)
        return _policy_page(request, cfg_form=cfg_form, status=400)
    name = getattr(request.FILES.get("policy_cfg"), "name", "policy.cfg")
    form = PolicyForm(initial={**PolicyForm.initial_from(rules.to_json()), "note": f"imported from {name}"})
    preview = _preview(rules, note=f"imported from {name}", source="policy.cfg")
    return _policy_page(request, form=form, preview=preview)


@staff_required
@require_POST
def console_policy_confirm(request: HttpRequest) -> HttpResponse:
    """Apply the rules whose dry run was shown, unless the policy changed meanwhile."""
    try:
        rules, _ = read_rules(json.loads(request.POST.get("rules", "")))
        based_on = int(request.POST.get("based_on", ""))
    except (ValueError, json.JSONDecodeError):
        messages.error(request, "The confirmation did not carry a policy; make the dry run again.")
        return redirect("marketplace-console-policy")
    except PolicyInvalid as exc:
        messages.error(request, f"The policy is not valid: {exc.message}")
        return redirect("marketplace-console-policy")
    source = request.POST.get("source", "form")
    try:
        row, changed = policy_services.policy_change(
            actor=request.user,
            rules=rules,
            note=request.POST.get("note", "")[:2000],
            based_on=based_on,
            source="policy.cfg" if source == "policy.cfg" else "console",
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        if changed:
            messages.success(request, f"Policy #{row.pk} is now active.")
        else:
            messages.info(request, "The policy already says this: nothing changed.")
    return redirect("marketplace-console-policy")


@staff_required
@require_GET
def console_site_key(request: HttpRequest) -> HttpResponse:
    """The site key's fingerprint and armored public key, for other sites to trust."""
    return render(request, "marketplace/console_site_key.html", {"site_key": selectors.site_key_get()})
