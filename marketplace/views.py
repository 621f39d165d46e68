"""Marketplace pages. Each calls the same selectors and services as the API."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from core.errors import ApplicationError, NotFound
from marketplace import selectors, services
from marketplace.api import EndorserFilter, ImageSearchFilter, parse_created
from marketplace.forms import EntryUploadForm, PgpKeyForm
from marketplace.models import Entry

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
    now = timezone.now()
    filters = ImageSearchFilter(request.GET or None, queryset=selectors.image_list())
    images = filters.qs if filters.is_bound and filters.is_valid() else selectors.image_search(now=now)
    if filters.is_bound and not filters.is_valid():
        images = images.none()
    page = Paginator(images, PAGE_SIZE).get_page(request.GET.get("page"))
    for image in page:
        _mark(image.latest_entries, now)  # type: ignore[attr-defined]
        image.current_count = sum(e.status_now == "valid" for e in image.latest_entries)  # type: ignore[attr-defined]
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "marketplace/search.html",
        {"filters": filters, "page": page, "query": query.urlencode()},
    )


def image_detail(request: HttpRequest, identifier: str) -> HttpResponse:
    now = timezone.now()
    try:
        image = selectors.image_get(identifier=identifier)
    except NotFound as exc:
        raise Http404(exc.message) from None
    entries = _mark(image.latest_entries, now)  # type: ignore[attr-defined]
    current = [e for e in entries if e.status_now == "valid"]  # type: ignore[attr-defined]
    return render(request, "marketplace/image.html", {"image": image, "entries": entries, "current": current})


def _entry(identifier: str, email: str, created: str) -> Entry:
    try:
        return selectors.entry_get(identifier=identifier, email=email, created=parse_created(created))
    except NotFound as exc:
        raise Http404(exc.message) from None


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


def entry_download(request: HttpRequest, identifier: str, email: str, created: str) -> HttpResponse:
    """The original signed bytes, as a file."""
    entry = _entry(identifier, email, created)
    response = HttpResponse(bytes(entry.raw), content_type="application/rdf+xml")
    response["Content-Disposition"] = f'attachment; filename="{identifier}-{created.replace(":", "")}.xml"'
    return response


def endorser_list(request: HttpRequest) -> HttpResponse:
    filters = EndorserFilter(request.GET or None, queryset=selectors.endorser_list())
    endorsers = filters.qs if filters.is_bound and filters.is_valid() else selectors.endorser_list()
    page = Paginator(endorsers, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "marketplace/endorsers.html", {"filters": filters, "page": page})


def endorser_history(request: HttpRequest, email: str) -> HttpResponse:
    now = timezone.now()
    try:
        endorser = selectors.endorser_get(email=email)
    except NotFound as exc:
        raise Http404(exc.message) from None
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
@require_POST
def pgp_key_revoke(request: HttpRequest, fingerprint: str) -> HttpResponse:
    try:
        key = services.pgp_key_revoke(actor=request.user, fingerprint=fingerprint)
    except NotFound as exc:
        raise Http404(exc.message) from None
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Key {key.fingerprint} revoked.")
    return redirect("marketplace-pgp-keys")
