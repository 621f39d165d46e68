"""The one quota service: project limits, usage counted from live resources, race-free reservations.

Accounts knows no instances or volumes. Compute and storage register a usage counter per resource at
start-up (``AppConfig.ready``). A counter answers for many projects at once (``{project id: usage}``; a
project it leaves out uses nothing), so a page listing projects counts each resource in one query::

    register_usage_counter("vcpus", lambda ids: dict(Instance.objects.live().filter(project_id__in=ids)
                           .values_list("project_id").annotate(n=Sum("vcpus"))))

A provider that counts several resources from one aggregate query registers them together, and is asked once for
all of those a reservation or a page needs::

    register_usage_provider(("instances", "vcpus"), lambda ids, resources: {…: {"instances": 2, "vcpus": 4}})

and reserve inside the transaction that creates the resource, so the new row is counted by the next
reservation and the project's quota row stays locked until it commits::

    tx = transaction.atomic()
    with tx:
        quota_reserve(project=project, request={"instances": 1, "vcpus": 4, "ram_mib": 8192}, within=tx)
        Instance.objects.create(...)

Without ``within`` the reservation is a :class:`~accounts.models.QuotaHold` (a ledger row) that counts
as usage until :func:`quota_release`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.db.transaction import Atomic

from accounts.models import QUOTA_RESOURCES, Project, Quota, QuotaHold
from core import audit
from core.errors import Conflict, NotFound, PermissionDenied

UsageCounter = Callable[[Sequence[int]], Mapping[int, int]]
# ``provider(project_ids, resources)`` → ``{project id: {resource: usage}}`` for the resources asked (a subset of
# those it was registered for).
UsageProvider = Callable[[Sequence[int], Sequence[str]], Mapping[int, Mapping[str, int]]]

# How each resource is named in messages ("vCPU quota exceeded (…)").
RESOURCE_LABELS = {
    "instances": "Instance",
    "vcpus": "vCPU",
    "ram_mib": "RAM MiB",
    "volume_gib": "Volume GiB",
    "volumes": "Volume",
    "public_ips": "Public IP",
}

_counters: dict[str, list[UsageCounter]] = {resource: [] for resource in QUOTA_RESOURCES}
_providers: list[tuple[frozenset[str], UsageProvider]] = []
_counters_lock = threading.Lock()


class QuotaExceeded(Conflict):
    """A reservation would take a project over one of its limits."""

    default_code = "quota-exceeded"


@dataclass(frozen=True)
class ResourceUsage:
    resource: str
    limit: int
    used: int

    @property
    def label(self) -> str:
        return RESOURCE_LABELS[self.resource]

    @property
    def available(self) -> int:
        return max(self.limit - self.used, 0)


def _check_resource(resource: str) -> None:
    if resource not in QUOTA_RESOURCES:
        raise ValueError(f"unknown quota resource {resource!r}; known: {', '.join(QUOTA_RESOURCES)}")


def register_usage_counter(resource: str, counter: UsageCounter) -> None:
    """Count ``resource`` with ``counter(project_ids) -> {project id: usage}``; counters of a resource add up.
    Called at start-up by the apps that own the resources. ``counter`` runs inside the reservation's
    transaction, so it must read the database through the default connection."""
    _check_resource(resource)
    with _counters_lock:
        if counter not in _counters[resource]:
            _counters[resource] = [*_counters[resource], counter]


def unregister_usage_counter(resource: str, counter: UsageCounter) -> None:
    _check_resource(resource)
    with _counters_lock:
        _counters[resource] = [c for c in _counters[resource] if c is not counter]


def register_usage_provider(resources: Sequence[str], provider: UsageProvider) -> None:
    """Count several ``resources`` with one ``provider(project_ids, resources) -> {project id: {resource: usage}}``
    (one aggregate query for all of them, where one counter per resource would take one query each). It adds up
    with the counters and providers of the same resources, and runs inside the reservation's transaction like
    them."""
    covered = frozenset(resources)
    if not covered:
        raise ValueError("a usage provider counts at least one resource")
    for resource in covered:
        _check_resource(resource)
    global _providers
    with _counters_lock:
        if not any(p is provider for _, p in _providers):
            _providers = [*_providers, (covered, provider)]


def unregister_usage_provider(provider: UsageProvider) -> None:
    global _providers
    with _counters_lock:
        _providers = [(covered, p) for covered, p in _providers if p is not provider]


def quota_defaults() -> dict[str, int]:
    """The site's default limits of a new project (``QUOTA_*`` settings)."""
    return {resource: int(settings.ACCOUNTS_QUOTA_DEFAULTS[resource]) for resource in QUOTA_RESOURCES}


def quota_create_default(*, project: Project) -> Quota:
    """Give ``project`` the site's default limits. Call inside the transaction creating the project."""
    return Quota.objects.create(project=project, **quota_defaults())


def projects_usage(
    *, project_ids: Iterable[int], resources: Sequence[str] = QUOTA_RESOURCES
) -> dict[int, dict[str, int]]:
    """What each project uses now of each of ``resources`` (default: all): the registered counters and providers
    plus quota holds, in one query for the holds and one per counter or provider asked, however many projects.
    Resources not asked for read 0."""
    ids = list(dict.fromkeys(project_ids))
    usage = {pid: dict.fromkeys(QUOTA_RESOURCES, 0) for pid in ids}
    if not ids or not resources:
        return usage
    holds = QuotaHold.objects.filter(project_id__in=ids).values("project_id").annotate(**{r: Sum(r) for r in resources})
    for row in holds:
        held: dict[str, Any] = dict(row)
        for resource in resources:
            usage[held["project_id"]][resource] += int(held[resource] or 0)
    for resource in resources:
        for count in _counters[resource]:
            for pid, used in count(ids).items():
                if pid in usage:
                    usage[pid][resource] += int(used or 0)
    for covered, provider in _providers:
        wanted = [resource for resource in resources if resource in covered]
        if not wanted:
            continue
        for pid, counts in provider(ids, wanted).items():
            if pid in usage:
                for resource in wanted:
                    usage[pid][resource] += int(counts.get(resource) or 0)
    return usage


def project_usage(*, project: Project) -> dict[str, int]:
    """What ``project`` uses now of each resource: the registered counters plus quota holds."""
    return projects_usage(project_ids=[project.pk])[project.pk]


def quotas_usage(*, projects: Sequence[Project]) -> dict[int, dict[str, ResourceUsage]]:
    """Limits and usage of each project, by id, for display (no lock: a snapshot); a fixed number of
    queries for any number of projects (their quotas are selected with them by the selectors)."""
    usage = projects_usage(project_ids=[p.pk for p in projects])
    return {
        p.pk: {r: ResourceUsage(resource=r, limit=p.quota.limits()[r], used=usage[p.pk][r]) for r in QUOTA_RESOURCES}
        for p in projects
    }


def quota_usage(*, project: Project) -> dict[str, ResourceUsage]:
    """Limits and usage of ``project`` for display (no lock: a snapshot)."""
    return quotas_usage(projects=[project])[project.pk]


def _clean_request(request: Mapping[str, int]) -> dict[str, int]:
    clean: dict[str, int] = {}
    for resource, amount in request.items():
        _check_resource(resource)
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            raise ValueError(f"quota request for {resource} must be a non-negative integer, got {amount!r}")
        clean[resource] = amount
    return clean


def _lock_and_check(project: Project, request: dict[str, int]) -> None:
    """Lock the project's quota row, count usage and refuse if any requested amount does not fit.

    Precondition: inside a transaction (the lock lasts until it ends)."""
    try:
        quota = Quota.objects.select_for_update().get(project_id=project.pk)
    except Quota.DoesNotExist:
        raise NotFound(f"project {project.pk} has no quota") from None
    limits = quota.limits()
    # Only what is asked for is counted (a volume request need not count instances).
    asked = [resource for resource in QUOTA_RESOURCES if request.get(resource, 0)]
    usage = projects_usage(project_ids=[project.pk], resources=asked)[project.pk]
    for resource in QUOTA_RESOURCES:
        requested = request.get(resource, 0)
        if requested and usage[resource] + requested > limits[resource]:
            raise QuotaExceeded(
                f"{RESOURCE_LABELS[resource]} quota exceeded "
                f"(quota {limits[resource]}, used {usage[resource]}, requested {requested})",
                extra={
                    "resource": resource,
                    "quota": limits[resource],
                    "used": usage[resource],
                    "requested": requested,
                },
            )


def quota_reserve(
    *,
    project: Project,
    request: Mapping[str, int],
    within: Atomic | None = None,
    holder: str = "",
    actor: Any = None,
) -> QuotaHold | None:
    """Reserve ``request`` (resource → amount) in ``project`` or raise :class:`QuotaExceeded`.

    With ``within`` (an ``transaction.atomic()`` the caller has entered), the check runs in that
    transaction and returns None: the caller creates its counted rows before it commits, and the quota
    row stays locked until then. Without it a :class:`QuotaHold` named ``holder`` is written and
    returned; it counts as usage until :func:`quota_release`."""
    clean = _clean_request(request)
    if within is not None:
        connection = transaction.get_connection(within.using)
        if within not in connection.atomic_blocks:
            raise RuntimeError("quota_reserve(within=…) must be called inside that atomic block")
        _lock_and_check(project, clean)
        return None
    if not holder:
        raise ValueError("a quota hold needs a holder (what the quota is held for)")
    with transaction.atomic():
        _lock_and_check(project, clean)
        hold = QuotaHold.objects.create(project=project, holder=holder, **clean)
        audit.record(actor, "accounts.quota.held", hold, project=project.pk, **clean)
    return hold


def quota_release(*, hold: QuotaHold, actor: Any = None) -> None:
    """Give back what ``hold`` reserved (idempotent)."""
    with transaction.atomic():
        deleted, _ = QuotaHold.objects.filter(pk=hold.pk).delete()
        if deleted:
            audit.record(actor, "accounts.quota.released", hold.project, holder=hold.holder)


def quota_set(*, actor: Any, project: Project, limits: Mapping[str, int]) -> Quota:
    """Change some of ``project``'s limits (staff only). Lowering a limit below usage is allowed: it
    only stops new reservations."""
    if not getattr(actor, "is_staff", False):
        raise PermissionDenied("only site administrators change quotas")
    clean = _clean_request(limits)
    with transaction.atomic():
        quota = Quota.objects.select_for_update().get(project_id=project.pk)
        before = quota.limits()
        for resource, amount in clean.items():
            setattr(quota, resource, amount)
        quota.save()
        changed = {r: [before[r], clean[r]] for r in clean if before[r] != clean[r]}
        audit.record(actor, "accounts.quota.changed", project, changes=changed)
    return quota
