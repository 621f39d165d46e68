"""The quota service: limits, usage from registered counters and holds, refusals, and races."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import transaction
from django.db.models import Sum

from accounts import quotas
from accounts.models import Project, QuotaHold
from accounts.quotas import QuotaExceeded, quota_release, quota_reserve, quota_set, quota_usage
from accounts.services import project_personal_ensure
from core.models import AuditEntry
from tests.factories import UserFactory
from tests.race import race


@pytest.fixture
def project(db, owner) -> Project:
    return project_personal_ensure(user=owner)


@pytest.fixture
def vcpu_limit(project):
    def set_limit(**limits: int) -> None:
        project.quota.__class__.objects.filter(project=project).update(**limits)

    return set_limit


@pytest.fixture
def holds_counted_twice() -> Iterator[None]:
    """A second counter over real rows (the holds' vCPUs again), as compute's would be over instances."""

    def count(project_ids) -> dict[int, int]:
        rows = QuotaHold.objects.filter(project_id__in=project_ids).values("project_id").annotate(n=Sum("vcpus"))
        return {row["project_id"]: row["n"] or 0 for row in rows}

    quotas.register_usage_counter("vcpus", count)
    yield
    quotas.unregister_usage_counter("vcpus", count)


def test_refusal_names_the_limit_the_usage_and_the_request(project, vcpu_limit):
    vcpu_limit(vcpus=20)
    quota_reserve(project=project, request={"vcpus": 18}, holder="test:first")
    with pytest.raises(QuotaExceeded) as refused:
        quota_reserve(project=project, request={"vcpus": 4}, holder="test:second")
    assert refused.value.message == "vCPU quota exceeded (quota 20, used 18, requested 4)"
    assert refused.value.code == "quota-exceeded"
    assert refused.value.extra == {"resource": "vcpus", "quota": 20, "used": 18, "requested": 4}
    assert QuotaHold.objects.count() == 1


@pytest.mark.parametrize(
    ("resource", "label"),
    [
        ("instances", "Instance"),
        ("ram_mib", "RAM MiB"),
        ("volume_gib", "Volume GiB"),
        ("volumes", "Volume"),
        ("public_ips", "Public IP"),
    ],
)
def test_every_resource_is_limited_with_its_own_name(project, vcpu_limit, resource, label):
    vcpu_limit(**{resource: 3})
    with pytest.raises(QuotaExceeded, match=rf"^{label} quota exceeded \(quota 3, used 0, requested 4\)$"):
        quota_reserve(project=project, request={resource: 4}, holder="test")


def test_a_request_that_fits_exactly_is_accepted(project, vcpu_limit):
    vcpu_limit(vcpus=4)
    assert quota_reserve(project=project, request={"vcpus": 4}, holder="test") is not None
    assert quota_usage(project=project)["vcpus"].used == 4


def test_registered_counters_add_to_usage(project, vcpu_limit, holds_counted_twice):
    vcpu_limit(vcpus=10)
    quota_reserve(project=project, request={"vcpus": 3}, holder="test")
    assert quota_usage(project=project)["vcpus"].used == 6
    with pytest.raises(QuotaExceeded, match=r"used 6, requested 5"):
        quota_reserve(project=project, request={"vcpus": 5}, holder="test")


def test_a_released_hold_frees_its_quota(project, vcpu_limit):
    vcpu_limit(vcpus=2)
    hold = quota_reserve(project=project, request={"vcpus": 2}, holder="test")
    quota_release(hold=hold)
    quota_release(hold=hold)  # twice is harmless
    assert quota_usage(project=project)["vcpus"].used == 0
    assert quota_reserve(project=project, request={"vcpus": 2}, holder="test")


def test_reserving_within_the_callers_transaction_counts_the_rows_it_creates(project, vcpu_limit, holds_counted_twice):
    vcpu_limit(vcpus=4)
    tx = transaction.atomic()
    with tx:
        assert quota_reserve(project=project, request={"vcpus": 2}, within=tx) is None
        # The caller creates its counted row in the same transaction (here a hold stands in for it).
        QuotaHold.objects.create(project=project, holder="instance:1", vcpus=2)
    # 2 held + 2 counted by the second counter = 4: nothing more fits.
    with pytest.raises(QuotaExceeded, match=r"quota 4, used 4, requested 1"):
        quota_reserve(project=project, request={"vcpus": 1}, holder="test")


def test_reserving_within_a_transaction_that_is_not_open_is_a_programming_error(project):
    with pytest.raises(RuntimeError, match="inside that atomic block"):
        quota_reserve(project=project, request={"vcpus": 1}, within=transaction.atomic())


@pytest.mark.parametrize("request_", [{"cpus": 1}, {"vcpus": -1}, {"vcpus": 1.5}, {"vcpus": True}])
def test_malformed_requests_are_refused(project, request_):
    with pytest.raises(ValueError):
        quota_reserve(project=project, request=request_, holder="test")


def test_a_zero_request_passes_even_over_quota(project, vcpu_limit):
    quota_reserve(project=project, request={"vcpus": 5}, holder="test")
    vcpu_limit(vcpus=1)
    assert quota_reserve(project=project, request={"vcpus": 0, "ram_mib": 1}, holder="test")


def test_staff_change_limits_with_an_audit_entry(project, staff, owner):
    quota_set(actor=staff, project=project, limits={"vcpus": 64})
    project.quota.refresh_from_db()
    assert project.quota.vcpus == 64
    entry = AuditEntry.objects.get(action="accounts.quota.changed")
    assert entry.details["changes"]["vcpus"][1] == 64
    from core.errors import PermissionDenied

    with pytest.raises(PermissionDenied):
        quota_set(actor=owner, project=project, limits={"vcpus": 1000})


def test_me_shows_the_quota_and_usage(api_as, owner, project, vcpu_limit):
    vcpu_limit(vcpus=8)
    quota_reserve(project=project, request={"vcpus": 3, "ram_mib": 1024}, holder="test")
    body = api_as(owner).get("/api/v1/accounts/me/").json()
    assert body["user"]["username"] == "owner"
    [entry] = body["projects"]
    assert (entry["name"], entry["role"], entry["personal"]) == ("personal-owner", "manager", True)
    assert entry["quotas"]["vcpus"] == {"limit": 8, "used": 3}
    assert entry["quotas"]["ram_mib"]["used"] == 1024
    assert set(entry["quotas"]) == {"instances", "vcpus", "ram_mib", "volume_gib", "volumes", "public_ips"}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_reservations_never_exceed_the_quota():
    project = project_personal_ensure(user=UserFactory(username="racer"))
    project.quota.__class__.objects.filter(project=project).update(vcpus=10)

    def reserve(n: int) -> str:
        try:
            quota_reserve(project=project, request={"vcpus": 1}, holder=f"racer:{n}")
        except QuotaExceeded as exc:
            return exc.message
        return "ok"

    outcomes = race([lambda n=n: reserve(n) for n in range(50)], timeout=120)
    assert len(outcomes) == 50
    assert outcomes.count("ok") == 10
    refusals = [o for o in outcomes if o != "ok"]
    assert len(refusals) == 40
    assert set(refusals) == {"vCPU quota exceeded (quota 10, used 10, requested 1)"}
    assert quota_usage(project=project)["vcpus"].used == 10
    assert QuotaHold.objects.filter(project=project).count() == 10


@pytest.fixture
def holds_counted_by_a_provider() -> Iterator[list[list[str]]]:
    """A provider counting two resources from one query (the holds' vCPUs and RAM again), recording what it is
    asked for."""
    asked: list[list[str]] = []

    def provide(project_ids, resources) -> dict[int, dict[str, int]]:
        asked.append(list(resources))
        rows = (
            QuotaHold.objects.filter(project_id__in=project_ids)
            .values("project_id")
            .annotate(vcpus=Sum("vcpus"), ram_mib=Sum("ram_mib"))
        )
        return {row["project_id"]: {r: row[r] or 0 for r in resources} for row in rows}

    quotas.register_usage_provider(("vcpus", "ram_mib"), provide)
    yield asked
    quotas.unregister_usage_provider(provide)


def test_a_usage_provider_counts_several_resources_once_and_only_those_asked(
    project, vcpu_limit, holds_counted_by_a_provider
):
    vcpu_limit(vcpus=20, ram_mib=10_000)
    quota_reserve(project=project, request={"vcpus": 6, "ram_mib": 3000}, holder="test:first")
    assert holds_counted_by_a_provider == [["vcpus", "ram_mib"]]
    # 6 held + 6 counted again by the provider: 12 used, so 10 more do not fit.
    with pytest.raises(QuotaExceeded) as refused:
        quota_reserve(project=project, request={"vcpus": 10}, holder="test:second")
    assert refused.value.extra == {"resource": "vcpus", "quota": 20, "used": 12, "requested": 10}
    assert holds_counted_by_a_provider[-1] == ["vcpus"]
    usage = quota_usage(project=project)
    assert (usage["vcpus"].used, usage["ram_mib"].used, usage["instances"].used) == (12, 6000, 0)


def test_a_usage_provider_must_name_known_resources():
    with pytest.raises(ValueError, match="unknown quota resource"):
        quotas.register_usage_provider(("vcpus", "gpus"), lambda ids, resources: {})
    with pytest.raises(ValueError, match="at least one"):
        quotas.register_usage_provider((), lambda ids, resources: {})
