"""Reads of accounts data, scoped to the asking user. ``access_*`` fetch *and* authorise: an object the
actor may not see raises the same :class:`~core.errors.NotFound` as a missing one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.hashers import check_password
from django.contrib.auth.models import User
from django.db.models import Count, F, QuerySet
from django.db.models.functions import Lower

from accounts.models import ApiToken, Membership, Project, RegistrationRequest, SshKey
from core.errors import NotFound, PermissionDenied


def project_list(*, actor: User) -> QuerySet[Project]:
    """The projects ``actor`` is a member of, each with the actor's own membership from the same query (the join
    the filter makes): ``member_role`` and ``member_user_id`` (whose role it is)."""
    return (
        Project.objects.filter(memberships__user=actor)
        .annotate(member_role=F("memberships__role"), member_user_id=F("memberships__user_id"))
        .select_related("quota")
        .order_by("name")
    )


def _role_read_with(project: Project, actor: User) -> str | None:
    """The actor's role as :func:`project_list` read it with ``project``, or None when it was read for someone
    else (or not by it)."""
    if getattr(project, "member_user_id", None) == actor.pk:
        return getattr(project, "member_role", None)
    return None


def project_role(*, actor: User, project: Project) -> str | None:
    """The role of ``actor`` in ``project``, or None when not a member."""
    role = _role_read_with(project, actor)
    if role is not None:
        return role
    return Membership.objects.filter(project=project, user=actor).values_list("role", flat=True).first()


def access_project(*, actor: User, project_id: Any, manage: bool = False) -> Project:
    """The project ``project_id`` if ``actor`` is a member; with ``manage``, the actor must be its manager
    (a member who is not gets PermissionDenied: they can see the project, not change it)."""
    try:
        project = project_list(actor=actor).get(pk=int(project_id))
    except (Project.DoesNotExist, TypeError, ValueError):
        raise NotFound("No such project.") from None
    if manage and project_role(actor=actor, project=project) != Membership.Role.MANAGER:
        raise PermissionDenied("only the project's managers can do this", code="not-project-manager")
    return project


def project_access_check(*, actor: User, project: Project) -> Project:
    """``project`` if ``actor`` is a member, else NotFound (as :func:`access_project`). A project read by
    :func:`project_list` / :func:`access_project` for this same actor carries the actor's membership and is not
    read again (a view that checked access hands the project to a service that checks it too); any other
    project object, one read for another user included, is checked with a query."""
    if _role_read_with(project, actor) is not None:
        return project
    return access_project(actor=actor, project_id=project.pk)


def membership_list(*, project: Project) -> QuerySet[Membership]:
    """Members of ``project`` (the caller has checked access to the project)."""
    return Membership.objects.filter(project=project).select_related("user").order_by("user__username")


def access_membership(*, project: Project, user_id: Any) -> Membership:
    try:
        return membership_list(project=project).get(user_id=int(user_id))
    except (Membership.DoesNotExist, TypeError, ValueError):
        raise NotFound("No such member.") from None


def ssh_key_list(*, actor: User) -> QuerySet[SshKey]:
    return SshKey.objects.filter(user=actor).order_by("name")


def access_ssh_key(*, actor: User, key_id: Any) -> SshKey:
    try:
        return ssh_key_list(actor=actor).get(pk=int(key_id))
    except (SshKey.DoesNotExist, TypeError, ValueError):
        raise NotFound("No such SSH key.") from None


def api_token_list(*, actor: User) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=actor).select_related("token").order_by("-created", "-id")


def access_api_token(*, actor: User, token_id: Any) -> ApiToken:
    try:
        return api_token_list(actor=actor).get(pk=int(token_id))
    except (ApiToken.DoesNotExist, TypeError, ValueError):
        raise NotFound("No such token.") from None


def registration_list(*, actor: User, status: str | None = None) -> QuerySet[RegistrationRequest]:
    """Registration requests for staff, oldest pending first; anyone else sees none."""
    if not actor.is_staff:
        return RegistrationRequest.objects.none()
    requests = RegistrationRequest.objects.select_related("decided_by", "user")
    if status:
        requests = requests.filter(status=status)
    return requests.order_by("created", "id") if status == "pending" else requests.order_by("-created", "-id")


def access_registration(*, actor: User, registration_id: Any) -> RegistrationRequest:
    try:
        return registration_list(actor=actor).get(pk=int(registration_id))
    except (RegistrationRequest.DoesNotExist, TypeError, ValueError):
        raise NotFound("No such registration request.") from None


@dataclass(frozen=True)
class EmailConflict:
    """Rows that break "an e-mail names one person": ``kind`` is ``users`` or ``pending registrations``."""

    kind: str
    email: str
    names: tuple[str, ...]


def email_conflicts(
    *, users: QuerySet[Any] | None = None, registrations: QuerySet[Any] | None = None
) -> list[EmailConflict]:
    """Accounts sharing an e-mail address (case-insensitively) and pending requests sharing one.

    Reads only; a migration passes its historical models' querysets."""
    users = User.objects.all() if users is None else users
    registrations = RegistrationRequest.objects.all() if registrations is None else registrations
    found: list[EmailConflict] = []
    for kind, rows in (
        ("users", users.exclude(email="")),
        ("pending registrations", registrations.filter(status="pending").exclude(email="")),
    ):
        shared = (
            rows.annotate(address=Lower("email"))
            .values("address")
            .annotate(n=Count("pk"))
            .filter(n__gt=1)
            .order_by("address")
        )
        for row in shared:
            names = rows.annotate(address=Lower("email")).filter(address=row["address"]).order_by("pk")
            found.append(EmailConflict(kind, row["address"], tuple(names.values_list("username", flat=True))))
    return found


def project_admin_list(*, name: str = "") -> QuerySet[Project]:
    """Every project of the site with its quota and member count, by name; ``name`` filters by a part of it
    (staff pages: the views check staff before calling)."""
    projects = Project.objects.select_related("quota", "personal_owner").annotate(member_count=Count("memberships"))
    if name:
        projects = projects.filter(name__icontains=name)
    return projects.order_by("name")


def access_project_admin(*, project_id: Any) -> Project:
    try:
        return project_admin_list().get(pk=int(project_id))
    except (Project.DoesNotExist, TypeError, ValueError):
        raise NotFound("No such project.") from None


def registration_pending_for_login(*, username: str, password: str) -> RegistrationRequest | None:
    """The pending registration of ``username`` when ``password`` is the one it was made with, so that the login
    page can say the account waits for approval without telling strangers who asked for one."""
    registration = (
        RegistrationRequest.objects.filter(username__iexact=username, status=RegistrationRequest.Status.PENDING)
        .exclude(password_hash="")
        .first()
    )
    if registration is None or not check_password(password, registration.password_hash):
        return None
    return registration
