"""What every portal page shares: who may open staff pages, and how a refusal becomes the site's 403/404 page."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django_htmx.http import HttpResponseClientRefresh

from core.errors import NotFound, PermissionDenied

PageView = Callable[..., HttpResponse]


def error_pages(view: PageView) -> PageView:
    """Render ``NotFound`` from a selector or service as the 404 page and ``PermissionDenied`` as the 403 page
    (missing and not yours look the same, STYLE rule 4); other application errors are the view's to show."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from None
        except PermissionDenied as exc:
            raise DjangoPermissionDenied(exc.message) from None

    return wrapped


def staff_required(view: PageView) -> PageView:
    """Anonymous users go to the login page; signed-in users who are not staff get the 403 page."""

    @login_required
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_staff:
            raise DjangoPermissionDenied("This page is for the site's administrators.")
        return view(request, *args, **kwargs)

    return wrapped


def partial_login_required(view: PageView) -> PageView:
    """``login_required`` for the parts of pages htmx asks for: when the session has ended, htmx is told to reload
    the whole page (which then goes to the login page) instead of swapping the login page into the part."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated and getattr(request, "htmx", False):
            return HttpResponseClientRefresh()
        return login_required(view)(request, *args, **kwargs)

    return wrapped
