"""Forms of the accounts pages. They collect input; the services validate business rules and write."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm, SetPasswordForm
from django.contrib.auth.models import User

from accounts import selectors, services
from accounts.models import Membership
from core.errors import ApplicationError


def add_service_errors(form: forms.Form, exc: ApplicationError) -> None:
    """Show an ApplicationError on ``form``: per field when the service named fields, else on top."""
    errors = exc.extra.get("errors") or {}
    if not errors:
        form.add_error(None, exc.message)
    for field, messages in errors.items():
        for message in messages:
            form.add_error(field if field in form.fields else None, message)


class RegistrationForm(forms.Form):
    username = forms.CharField(max_length=20, help_text="3 to 20 letters, digits or underscores")
    email = forms.EmailField(label="E-mail", max_length=254)
    first_name = forms.CharField(label="Given name", max_length=150)
    last_name = forms.CharField(label="Family name", max_length=150)
    password = forms.CharField(widget=forms.PasswordInput, strip=False)
    password_again = forms.CharField(label="Password (again)", widget=forms.PasswordInput, strip=False)
    dn = forms.CharField(
        label="X.509 certificate DN (optional)",
        max_length=500,
        required=False,
        help_text="e.g. CN=Ada Lovelace,O=Example,C=UK or /C=UK/O=Example/CN=Ada Lovelace",
    )
    message = forms.CharField(
        label="Message to the administrators (optional)", widget=forms.Textarea(attrs={"rows": 3}), required=False
    )
    accept_terms = forms.BooleanField(label="I accept the terms of use of this site", required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("password") and data.get("password") != data.get("password_again"):
            self.add_error("password_again", "the two passwords differ")
        return data

    def to_input(self) -> services.RegistrationInput:
        data = self.cleaned_data
        return services.RegistrationInput(
            username=data["username"],
            email=data["email"],
            first_name=data["first_name"],
            last_name=data["last_name"],
            password=data["password"],
            dn=data["dn"],
            message=data["message"],
            accept_terms=data["accept_terms"],
        )


class EmailForm(forms.Form):
    email = forms.EmailField(label="E-mail", max_length=254)


class NewEmailForm(forms.Form):
    email = forms.EmailField(label="New e-mail address", max_length=254)


class RejectForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False, max_length=4000)


class SshKeyForm(forms.Form):
    name = forms.CharField(label="Key name", max_length=100, required=False, help_text="empty: the key's comment")
    public_key = forms.CharField(label="Public key", widget=forms.Textarea(attrs={"rows": 3}), max_length=16384)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "ssh-key-%s")
        super().__init__(*args, **kwargs)


class TokenForm(forms.Form):
    name = forms.CharField(label="Token name", max_length=100)
    expires_in_days = forms.IntegerField(label="Expires after (days)", required=False, min_value=1)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The profile page shows it beside the SSH key form, whose fields have the same names: distinct ids.
        kwargs.setdefault("auto_id", "token-%s")
        super().__init__(*args, **kwargs)


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Membership.Role.choices)


class DirectoryAwarePasswordResetForm(PasswordResetForm):
    """Django's reset form, which also mails people whose password lives in LDAP (their local password
    is unusable, which Django's form takes as "may not reset")."""

    def get_users(self, email: str) -> Iterator[User]:
        for user in User._default_manager.filter(email__iexact=email, is_active=True):
            if user.has_usable_password() or services.is_directory_user(user):
                yield user


class DirectoryAwareSetPasswordForm(SetPasswordForm):
    """Sets the new password where it is checked: the directory for LDAP users, else locally."""

    def save(self, commit: bool = True) -> User:
        services.user_password_set(actor=self.user, user=self.user, password=self.cleaned_data["new_password1"])
        return self.user


# The largest limit a quota column holds (a PositiveIntegerField on every database).
QUOTA_LIMIT_MAX = 2**31 - 1


class QuotaForm(forms.Form):
    """A project's six limits (staff). Lowering one below what the project uses only stops new requests."""

    instances = forms.IntegerField(label="Instances", min_value=0, max_value=QUOTA_LIMIT_MAX)
    vcpus = forms.IntegerField(label="vCPUs", min_value=0, max_value=QUOTA_LIMIT_MAX)
    ram_mib = forms.IntegerField(label="RAM (MiB)", min_value=0, max_value=QUOTA_LIMIT_MAX)
    volume_gib = forms.IntegerField(label="Volume space (GiB)", min_value=0, max_value=QUOTA_LIMIT_MAX)
    volumes = forms.IntegerField(label="Volumes", min_value=0, max_value=QUOTA_LIMIT_MAX)
    public_ips = forms.IntegerField(label="Public IPs", min_value=0, max_value=QUOTA_LIMIT_MAX)


class ProjectSearchForm(forms.Form):
    name = forms.CharField(label="Project name contains", max_length=100, required=False)


class LoginForm(AuthenticationForm):
    """Django's login form, which tells the person who asked for an account that it still waits for approval
    (only when the password is the one of their request: nobody else learns that a request exists)."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "pending": "Your registration is still waiting for an administrator's approval. You will get an e-mail "
        "when it is decided; until then you cannot log in.",
        "unconfirmed": "Your registration is waiting for you to confirm your e-mail address: open the link we "
        "mailed to you (or ask for it again on the registration page). An administrator then decides on it.",
    }

    def clean(self) -> dict[str, Any]:
        try:
            return super().clean()
        except forms.ValidationError:
            username = self.cleaned_data.get("username") or ""
            password = self.cleaned_data.get("password") or ""
            pending = (
                selectors.registration_pending_for_login(username=username, password=password)
                if username and password
                else None
            )
            if pending is not None:
                code = "pending" if pending.email_confirmed else "unconfirmed"
                raise forms.ValidationError(self.error_messages[code], code=code) from None
            raise
