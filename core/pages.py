"""What every portal page shares: who may open staff pages, and how a refusal becomes the site's 403/404 page."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.paginator import EmptyPage, Page, PageNotAnInteger, Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.functional import cached_property
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


# The deepest row a page may start at: far past any real list, well inside what databases take as an OFFSET (a
# page number a stranger makes up is a missing page, not a database error).
MAX_OFFSET = 2**31 - 1


class CountedPaginator(Paginator):
    """A paginator told how many rows there are (``count``; ``count_is_estimate`` when that is the database's
    estimate, for lists too long to count on every page) instead of counting them. Whether a next page exists is
    read from the page itself (one row more), so an estimate that is too low never hides a page."""

    def __init__(self, object_list: Any, per_page: int, *, count: int, count_is_estimate: bool = False) -> None:
        super().__init__(object_list, per_page)
        self._given_count = count
        self.count_is_estimate = count_is_estimate

    @cached_property
    def count(self) -> int:
        return self._given_count

    def validate_number(self, number: Any) -> int:
        try:
            value = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger("That page number is not an integer") from None
        if value < 1:
            raise EmptyPage("That page number is less than 1")
        if (value - 1) * self.per_page > MAX_OFFSET:
            raise EmptyPage("That page contains no results")
        return value

    def page(self, number: Any) -> Page:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        rows = list(self.object_list[bottom : bottom + self.per_page + 1])
        return _LookaheadPage(rows[: self.per_page], number, self, more=len(rows) > self.per_page)

    def get_page(self, number: Any) -> Page:
        try:
            return self.page(number)
        except (PageNotAnInteger, EmptyPage):
            return self.page(1)


def fetched_page(
    rows: list[Any], *, number: int, per_page: int, has_next: bool, count: int, count_is_estimate: bool = False
) -> Page:
    """A page that a selector fetched already (its rows, whether another follows, the count), as the templates and
    ``_pager.html`` show pages."""
    paginator = CountedPaginator([], per_page, count=count, count_is_estimate=count_is_estimate)
    return _LookaheadPage(rows, number, paginator, more=has_next)


def page_number(value: Any, *, per_page: int) -> int:
    """The page a request asks for (``?page=``) of pages of ``per_page`` rows; page 1 for anything that is not a page
    number, or one whose offset no database takes (:data:`MAX_OFFSET`)."""
    try:
        return CountedPaginator([], per_page, count=0).validate_number(value if value is not None else 1)
    except (PageNotAnInteger, EmptyPage):
        return 1


class _LookaheadPage(Page):
    def __init__(self, object_list: Any, number: int, paginator: Paginator, *, more: bool) -> None:
        super().__init__(object_list, number, paginator)
        self._more = more

    def has_next(self) -> bool:
        return self._more
