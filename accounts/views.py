"""Portal pages of accounts: registration, profile (keys, tokens, quotas), the staff registration
console and password reset. Every change goes through a service."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.views.decorators.http import require_http_methods, require_POST

from accounts import forms, selectors, services
from accounts.quotas import quota_set, quota_usage, quotas_usage
from accounts.throttling import password_reset_allowed
from core import pages
from core.errors import ApplicationError
from core.throttling import page_throttle_wait


def register(request: HttpRequest) -> HttpResponse:
    form = forms.RegistrationForm(request.POST or None)
    if request.method == "POST" and (wait := page_throttle_wait(request, "registration")) is not None:
        form.add_error(None, f"Too many registrations from your address; try again in {int(wait) + 1} seconds.")
        return render(request, "accounts/register.html", {"form": form}, status=429)
    if request.method == "POST" and form.is_valid():
        try:
            services.registration_submit(data=form.to_input())
        except ApplicationError as exc:
            forms.add_service_errors(form, exc)
        else:
            return redirect("register-done")
    return render(request, "accounts/register.html", {"form": form})


def register_done(request: HttpRequest) -> HttpResponse:
    return render(request, "accounts/register_done.html")


@require_http_methods(["GET", "POST"])
def register_confirm(request: HttpRequest, token: str) -> HttpResponse:
    """The page a confirmation link opens; confirming is its POST (mail scanners fetch links with GET)."""
    context: dict[str, Any] = {"token": token}
    try:
        if request.method == "POST":
            context["registration"] = services.registration_email_confirm(token=token)
            context["confirmed"] = True
        else:
            context["registration"] = services.registration_from_token(token)
    except ApplicationError as exc:
        context["error"] = exc.message
        return render(request, "accounts/register_confirm.html", context, status=exc.status)
    return render(request, "accounts/register_confirm.html", context)


@require_http_methods(["GET", "POST"])
def register_confirm_resend(request: HttpRequest) -> HttpResponse:
    form = forms.EmailForm(request.POST or None)
    if request.method == "POST":
        if (wait := page_throttle_wait(request, "registration")) is not None:
            form.add_error(None, f"Too many requests from your address; try again in {int(wait) + 1} seconds.")
            return render(request, "accounts/register_confirm_resend.html", {"form": form}, status=429)
        if form.is_valid():
            services.registration_confirmation_resend(email=form.cleaned_data["email"])
            messages.success(request, services.CONFIRMATION_RESEND_ANSWER)
            return redirect("register-confirm-resend")
    return render(request, "accounts/register_confirm_resend.html", {"form": form})


# --- profile ----------------------------------------------------------------------------------------


def _profile(request: HttpRequest, *, status: int = 200, **extra: Any) -> HttpResponse:
    user = request.user
    shown = list(selectors.project_list(actor=user))
    usage = quotas_usage(projects=shown)
    projects = [
        {
            "project": project,
            "role": selectors.project_role(actor=user, project=project),
            "usage": list(usage[project.pk].values()),
        }
        for project in shown
    ]
    context = {
        "projects": projects,
        "ssh_keys": selectors.ssh_key_list(actor=user),
        "tokens": selectors.api_token_list(actor=user),
        "ssh_key_form": forms.SshKeyForm(),
        "token_form": forms.TokenForm(),
        "email_form": forms.NewEmailForm(),
        **extra,
    }
    response = render(request, "accounts/profile.html", context, status=status)
    response["Cache-Control"] = "no-store"  # a new token may be on the page
    return response


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    return _profile(request)


@login_required
@require_POST
def profile_email_change(request: HttpRequest) -> HttpResponse:
    form = forms.NewEmailForm(request.POST)
    if form.is_valid():
        try:
            new = services.user_email_change_request(actor=request.user, email=form.cleaned_data["email"])
        except ApplicationError as exc:
            forms.add_service_errors(form, exc)
        else:
            messages.success(request, f"We sent a confirmation link to {new}; your address changes once you open it.")
            return redirect("profile")
    return _profile(request, status=400, email_form=form)


@require_http_methods(["GET", "POST"])
def profile_email_confirm(request: HttpRequest, token: str) -> HttpResponse:
    """The page the link mailed to a new address opens; confirming is its POST. No login needed: the
    link itself is the proof, bound to the account, the new and the current address."""
    context: dict[str, Any] = {"token": token}
    try:
        if request.method == "POST":
            context["change"] = services.user_email_change_confirm(token=token)
            context["confirmed"] = True
        else:
            context["change"] = services.email_change_from_token(token)
    except ApplicationError as exc:
        context["error"] = exc.message
        return render(request, "accounts/email_confirm.html", context, status=exc.status)
    return render(request, "accounts/email_confirm.html", context)


@login_required
@require_POST
def profile_ssh_key_add(request: HttpRequest) -> HttpResponse:
    form = forms.SshKeyForm(request.POST)
    if form.is_valid():
        try:
            key = services.ssh_key_add(actor=request.user, **form.cleaned_data)
        except ApplicationError as exc:
            forms.add_service_errors(form, exc)
        else:
            messages.success(request, f"SSH key {key.name} added ({key.fingerprint}).")
            return redirect("profile")
    return _profile(request, status=400, ssh_key_form=form)


@login_required
@require_POST
@pages.error_pages
def profile_ssh_key_delete(request: HttpRequest, key_id: int) -> HttpResponse:
    key = selectors.access_ssh_key(actor=request.user, key_id=key_id)
    services.ssh_key_delete(actor=request.user, key=key)
    messages.success(request, f"SSH key {key.name} deleted.")
    return redirect("profile")


@login_required
@require_POST
def profile_token_create(request: HttpRequest) -> HttpResponse:
    form = forms.TokenForm(request.POST)
    if form.is_valid():
        try:
            record, secret = services.api_token_create(actor=request.user, **form.cleaned_data)
        except ApplicationError as exc:
            forms.add_service_errors(form, exc)
        else:
            # Rendered, not redirected: the token is shown on this response only and stored nowhere.
            return _profile(request, new_token=secret, new_token_record=record)
    return _profile(request, status=400, token_form=form)


@login_required
@require_POST
@pages.error_pages
def profile_token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = selectors.access_api_token(actor=request.user, token_id=token_id)
    services.api_token_revoke(actor=request.user, token=token)
    messages.success(request, f"Token {token.name} revoked.")
    return redirect("profile")


# --- staff console ----------------------------------------------------------------------------------

CONSOLE_PAGE_SIZE = 50


@pages.staff_required
@require_http_methods(["GET"])
def console_registrations(request: HttpRequest) -> HttpResponse:
    decided = selectors.registration_list(actor=request.user).exclude(status="pending").select_related("decided_by")
    context = {
        "pending": selectors.registration_list(actor=request.user, status="pending"),
        "page": Paginator(decided, CONSOLE_PAGE_SIZE).get_page(request.GET.get("page")),
        "reject_form": forms.RejectForm(),
    }
    return render(request, "accounts/console_registrations.html", context)


@pages.staff_required
@require_POST
@pages.error_pages
def console_registration_approve(request: HttpRequest, registration_id: int) -> HttpResponse:
    registration = selectors.access_registration(actor=request.user, registration_id=registration_id)
    try:
        services.registration_approve(actor=request.user, registration=registration)
    except ApplicationError as exc:
        messages.error(request, f"{registration.username} was not approved: {exc.message}")
    else:
        messages.success(request, f"{registration.username} is approved; the account is ready.")
    return redirect("console-registrations")


@pages.staff_required
@require_POST
@pages.error_pages
def console_registration_reject(request: HttpRequest, registration_id: int) -> HttpResponse:
    registration = selectors.access_registration(actor=request.user, registration_id=registration_id)
    form = forms.RejectForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        services.registration_reject(actor=request.user, registration=registration, reason=reason)
    except ApplicationError as exc:
        messages.error(request, f"{registration.username} was not rejected: {exc.message}")
    else:
        messages.success(request, f"The registration of {registration.username} is rejected.")
    return redirect("console-registrations")


@pages.staff_required
@require_http_methods(["GET"])
def console_quotas(request: HttpRequest) -> HttpResponse:
    """Every project with its usage against its limits (staff), filterable by name, a page at a time."""
    search = forms.ProjectSearchForm(request.GET or None)
    name = search.cleaned_data["name"].strip() if search.is_valid() else ""
    page = Paginator(selectors.project_admin_list(name=name), CONSOLE_PAGE_SIZE).get_page(request.GET.get("page"))
    usage = quotas_usage(projects=list(page.object_list))
    page.object_list = [{"project": p, "usage": list(usage[p.pk].values())} for p in page.object_list]
    return render(
        request,
        "accounts/console_quotas.html",
        {"page": page, "search": search, "query": urlencode({"name": name}) if name else ""},
    )


@pages.staff_required
@require_http_methods(["GET", "POST"])
@pages.error_pages
def console_quota(request: HttpRequest, project_id: int) -> HttpResponse:
    """One project's limits and usage; POST changes the limits (``quota_set``, audited)."""
    project = selectors.access_project_admin(project_id=project_id)
    form = forms.QuotaForm(request.POST or None, initial=project.quota.limits())
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                quota_set(actor=request.user, project=project, limits=form.cleaned_data)
            except ApplicationError as exc:
                forms.add_service_errors(form, exc)
            else:
                messages.success(request, f"The quota of {project.name} is changed.")
                return redirect("console-quota", project_id=project.pk)
        status = 400
    context = {"project": project, "usage": list(quota_usage(project=project).values()), "form": form}
    return render(request, "accounts/console_quota.html", context, status=status)


# --- log in, password reset --------------------------------------------------------------------------

# Django's auth views put the server's address in ``site_name`` (``get_current_site``); the site's own name wins.
SITE_CONTEXT = {"site_name": settings.SITE_NAME}


class LoginView(auth_views.LoginView):
    """Django's login, saying so when the account asked for is still waiting for approval."""

    authentication_form = forms.LoginForm
    extra_context = SITE_CONTEXT


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    extra_context = SITE_CONTEXT


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    extra_context = SITE_CONTEXT


class PasswordResetView(auth_views.PasswordResetView):
    """Django's reset form, rate-limited per client address (``password_reset``, answered 429) and per
    account (``password_reset_account``: over it no mail goes out, and the answer is the usual one, so
    it tells nothing about the account)."""

    form_class = forms.DirectoryAwarePasswordResetForm
    extra_context = SITE_CONTEXT
    extra_email_context = SITE_CONTEXT
    success_url = reverse_lazy("password_reset_done")

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if (wait := page_throttle_wait(request, "password_reset")) is not None:
            form = self.get_form()
            form.is_valid()
            form.add_error(None, f"Too many password resets from your address; try again in {int(wait) + 1} seconds.")
            response = self.render_to_response(self.get_context_data(form=form))
            response.status_code = 429
            return response
        return super().post(request, *args, **kwargs)

    def form_valid(self, form: Any) -> HttpResponse:
        if not password_reset_allowed(self.request, email=form.cleaned_data["email"]):
            return HttpResponseRedirect(self.get_success_url())
        return super().form_valid(form)


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    form_class = forms.DirectoryAwareSetPasswordForm
    extra_context = SITE_CONTEXT
    success_url = reverse_lazy("password_reset_complete")

    def form_valid(self, form: Any) -> HttpResponseBase:
        try:
            return super().form_valid(form)
        except ApplicationError as exc:  # the directory did not take the new password
            form.add_error(None, exc.message)
            return self.form_invalid(form)
