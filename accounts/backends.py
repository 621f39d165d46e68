"""The LDAP login backend: django-auth-ldap's, plus the personal project every account has."""

from __future__ import annotations

from typing import Any

from django_auth_ldap.backend import LDAPBackend as DjangoAuthLDAPBackend

from accounts.services import project_personal_ensure


class LDAPBackend(DjangoAuthLDAPBackend):
    """django-auth-ldap's backend; an account it creates at a first login gets its personal project
    (approval makes it for accounts approved here; people added to the directory by other means log in
    without one otherwise)."""

    def authenticate(
        self, request: Any, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> Any:
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None and user.pk is not None:
            project_personal_ensure(user=user, actor=user)
        return user
