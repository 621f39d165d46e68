"""Projects: the personal project every account has, shared projects, and their members."""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from accounts.models import Membership, Project
from accounts.quotas import quota_create_default
from core import audit
from core.errors import ApplicationError, Conflict, NotFound, PermissionDenied

PERSONAL_PREFIX = "personal-"
# Used with ``fullmatch``: ``$`` alone also matches before a trailing newline.
PROJECT_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{1,99}")


def project_personal_ensure(*, user: User, actor: Any = None) -> Project:
    """The personal project of ``user``, created with the site's default quota if missing (idempotent)."""
    with transaction.atomic():
        existing = Project.objects.filter(personal_owner=user).first()
        if existing is not None:
            return existing
        project = Project.objects.create(
            name=f"{PERSONAL_PREFIX}{user.username}",
            description=f"Personal project of {user.get_full_name() or user.username}",
            personal_owner=user,
        )
        Membership.objects.create(project=project, user=user, role=Membership.Role.MANAGER)
        quota_create_default(project=project)
        audit.record(actor, "accounts.project.created", project, personal=True, owner=user.username)
    return project


def project_create(*, actor: User, name: str, description: str = "", manager: User) -> Project:
    """A shared project with ``manager`` as its first manager and the site's default quota (staff only:
    each project brings its own quota)."""
    if not actor.is_staff:
        raise PermissionDenied("only site administrators create projects")
    if not PROJECT_NAME_PATTERN.fullmatch(name) or name.startswith(PERSONAL_PREFIX):
        raise ApplicationError(
            f"name: use 2 to 100 letters, digits, '.', '_' or '-', not starting with '{PERSONAL_PREFIX}'",
            code="invalid",
        )
    try:
        with transaction.atomic():
            project = Project.objects.create(name=name, description=description)
            Membership.objects.create(project=project, user=manager, role=Membership.Role.MANAGER)
            quota_create_default(project=project)
            audit.record(actor, "accounts.project.created", project, personal=False, manager=manager.username)
    except IntegrityError:
        raise Conflict(f"a project named {name} already exists", code="project-exists") from None
    return project


def _lock_memberships(project: Project) -> list[Membership]:
    return list(Membership.objects.select_for_update().filter(project=project).order_by("pk"))


def _refuse_losing_last_manager(memberships: list[Membership], changing: Membership) -> None:
    managers = [m for m in memberships if m.role == Membership.Role.MANAGER]
    if changing.role == Membership.Role.MANAGER and len(managers) == 1:
        raise Conflict("a project keeps at least one manager: make someone else manager first", code="last-manager")


def project_member_add(*, actor: User, project: Project, user: User, role: str) -> Membership:
    """Add ``user`` to ``project`` with ``role``. The caller has checked that ``actor`` manages it."""
    if role not in Membership.Role.values:
        raise ApplicationError(f"role: must be one of {', '.join(Membership.Role.values)}", code="invalid")
    if not user.is_active:
        raise ApplicationError(f"username: {user.username} is not an active account", code="invalid")
    try:
        with transaction.atomic():
            membership = Membership.objects.create(project=project, user=user, role=role)
            audit.record(actor, "accounts.project.member_added", project, user=user.username, role=role)
    except IntegrityError:
        raise Conflict(f"{user.username} is already a member of {project.name}", code="already-member") from None
    return membership


def project_member_set_role(*, actor: User, membership: Membership, role: str) -> Membership:
    """Change a member's role; the last manager cannot be demoted."""
    if role not in Membership.Role.values:
        raise ApplicationError(f"role: must be one of {', '.join(Membership.Role.values)}", code="invalid")
    with transaction.atomic():
        memberships = _lock_memberships(membership.project)
        current = next((m for m in memberships if m.pk == membership.pk), None)
        if current is None:
            raise NotFound("No such member.")
        if current.role == role:
            return current
        if role != Membership.Role.MANAGER:
            _refuse_losing_last_manager(memberships, current)
        before = current.role
        current.role = role
        current.save(update_fields=["role"])
        audit.record(
            actor,
            "accounts.project.member_role_changed",
            current.project,
            user=current.user.username,
            role=[before, role],
        )
    return current


def project_member_remove(*, actor: User, membership: Membership) -> None:
    """Remove a member (managers remove anyone, members may leave); the last manager cannot go."""
    with transaction.atomic():
        memberships = _lock_memberships(membership.project)
        current = next((m for m in memberships if m.pk == membership.pk), None)
        if current is None:
            raise NotFound("No such member.")
        _refuse_losing_last_manager(memberships, current)
        current.delete()
        audit.record(actor, "accounts.project.member_removed", membership.project, user=membership.user.username)
