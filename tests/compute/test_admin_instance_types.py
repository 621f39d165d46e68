"""Instance types as site data: staff list, add, change and retire them through ``/api/v1/admin/instance-types/``
and the Django admin. There is always one default, offered; a type instances were made from is deactivated
rather than deleted; instances keep the sizes they were made with."""

from __future__ import annotations

import pytest

from compute.models import InstanceType
from core.models import AuditEntry

pytestmark = pytest.mark.django_db

LIST = "/api/v1/admin/instance-types/"
NEW = {"name": "gpu.large", "vcpus": 8, "ram_mib": 32768, "swap_mib": 0, "root_gib": 40}

MATRIX = [
    ("get", LIST, {"anonymous": 401, "outsider": 403, "member": 403, "owner": 403, "staff": 200}),
    ("post", LIST, {"anonymous": 401, "outsider": 403, "member": 403, "owner": 403, "staff": 201}),
    ("get", f"{LIST}t1.micro/", {"anonymous": 401, "outsider": 403, "member": 403, "owner": 403, "staff": 200}),
    ("patch", f"{LIST}t1.micro/", {"anonymous": 401, "outsider": 403, "member": 403, "owner": 403, "staff": 200}),
    ("delete", f"{LIST}t1.micro/", {"anonymous": 401, "outsider": 403, "member": 403, "owner": 403, "staff": 204}),
    ("get", f"{LIST}no.such/", {"staff": 404, "owner": 403}),
]
CASES = [(m, u, r, s) for m, u, expected in MATRIX for r, s in expected.items()]


@pytest.mark.parametrize(("method", "path", "role", "expected"), CASES)
def test_permission_matrix(api, types, project, owner, member, outsider, staff, method, path, role, expected):
    users = {"owner": owner, "member": member, "outsider": outsider, "staff": staff}
    if role in users:
        api.force_authenticate(user=users[role])
    body = {"ram_mib": 768} if method == "patch" else NEW
    response = getattr(api, method)(path, body, format="json")
    assert response.status_code == expected, response.content
    if expected >= 400:
        assert set(response.json()) >= {"detail", "code"}
    if expected == 204:
        assert not InstanceType.objects.filter(name="t1.micro").exists()
    elif role != "staff":
        assert InstanceType.objects.get(name="t1.micro").ram_mib == 512
        assert not InstanceType.objects.filter(name="gpu.large").exists()


def test_staff_list_every_type_with_its_live_instances_in_few_queries(
    api_as, staff, types, instance_on, make_host, django_assert_max_num_queries
):
    host = make_host("h1")
    instance_on(host, types["m1.small"])
    instance_on(host, types["m1.small"], state="terminated", name="old")
    InstanceType.objects.filter(name="c1.xlarge").update(is_active=False)
    client = api_as(staff)
    with django_assert_max_num_queries(3):
        rows = client.get(LIST).json()["results"]
    shown = {row["name"]: (row["live_instances"], row["is_active"], row["is_default"]) for row in rows}
    assert shown["m1.small"] == (1, True, True)
    assert shown["c1.xlarge"] == (0, False, False)
    assert len(shown) == 7


def test_staff_add_a_type_that_users_are_then_offered(api_as, staff, owner, types):
    created = api_as(staff).post(LIST, NEW, format="json")
    assert created.status_code == 201, created.json()
    assert created.json() | {"live_instances": 0} == {
        **NEW,
        "is_default": False,
        "is_active": True,
        "live_instances": 0,
    }
    offered = api_as(owner).get("/api/v1/compute/instance-types/").json()["results"]
    assert "gpu.large" in [row["name"] for row in offered]
    itype = InstanceType.objects.get(name="gpu.large")
    assert AuditEntry.objects.get(action="compute.instance_type.created", object_id=str(itype.pk)).actor == staff


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({**NEW, "name": "GPU Large"}, "instance-type-name"),
        ({**NEW, "name": "../x"}, "instance-type-name"),
        ({**NEW, "vcpus": 0}, "instance-type-size"),
        ({**NEW, "ram_mib": 32}, "instance-type-size"),
        ({**NEW, "root_gib": 10**6}, "instance-type-size"),
        ({**NEW, "swap_mib": -1}, "instance-type-size"),
        ({**NEW, "name": "m1.small"}, "instance-type-exists"),
    ],
)
def test_a_bad_new_type_is_refused_with_the_rule_and_nothing_changes(api_as, staff, types, body, code):
    response = api_as(staff).post(LIST, body, format="json")
    assert response.status_code in (400, 409)
    assert response.json()["code"] == code, response.json()
    assert InstanceType.objects.count() == 7


def test_a_new_default_takes_the_default_from_the_old_one(api_as, staff, types):
    assert api_as(staff).post(LIST, {**NEW, "is_default": True}, format="json").status_code == 201
    assert list(InstanceType.objects.filter(is_default=True).values_list("name", flat=True)) == ["gpu.large"]
    changed = api_as(staff).patch(f"{LIST}m1.small/", {"is_default": True}, format="json")
    assert changed.status_code == 200, changed.json()
    assert list(InstanceType.objects.filter(is_default=True).values_list("name", flat=True)) == ["m1.small"]


def test_the_default_type_cannot_be_retired_or_lose_its_default_without_another(api_as, staff, types):
    client = api_as(staff)
    for response in (
        client.delete(f"{LIST}m1.small/"),
        client.patch(f"{LIST}m1.small/", {"is_active": False}, format="json"),
        client.patch(f"{LIST}m1.small/", {"is_default": False}, format="json"),
    ):
        assert response.status_code == 409
        assert response.json()["code"] == "instance-type-default"
    assert InstanceType.objects.get(name="m1.small").is_default


def test_a_changed_type_applies_to_new_requests_only(api_as, staff, types, instance_on, make_host):
    vm = instance_on(make_host("h1"), types["t1.micro"])
    response = api_as(staff).patch(f"{LIST}t1.micro/", {"ram_mib": 1024, "vcpus": 2}, format="json")
    assert response.status_code == 200, response.json()
    assert (response.json()["ram_mib"], response.json()["vcpus"]) == (1024, 2)
    vm.refresh_from_db()
    assert (vm.vcpus, vm.ram_mib) == (1, 512)
    entry = AuditEntry.objects.get(action="compute.instance_type.updated")
    assert entry.details["changes"] == {"ram_mib": [512, 1024], "vcpus": [1, 2]}


def test_retiring_a_type_instances_were_made_from_deactivates_it(api_as, staff, owner, types, instance_on, make_host):
    instance_on(make_host("h1"), types["t1.micro"], state="terminated")
    response = api_as(staff).delete(f"{LIST}t1.micro/")
    assert response.status_code == 200
    assert response.json()["is_active"] is False
    assert InstanceType.objects.filter(name="t1.micro", is_active=False).exists()
    offered = [row["name"] for row in api_as(owner).get("/api/v1/compute/instance-types/").json()["results"]]
    assert "t1.micro" not in offered


def test_an_unused_type_is_deleted(api_as, staff, types):
    assert api_as(staff).delete(f"{LIST}c1.xlarge/").status_code == 204
    assert not InstanceType.objects.filter(name="c1.xlarge").exists()
    assert AuditEntry.objects.filter(action="compute.instance_type.deleted").count() == 1


def test_the_django_admin_goes_through_the_same_rules(client, staff, types, instance_on, make_host):
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    form = {
        "name": "gpu.large",
        "vcpus": 8,
        "ram_mib": 32768,
        "swap_mib": 0,
        "root_gib": 40,
        "is_default": "on",
        "is_active": "on",
    }
    assert client.post("/admin/compute/instancetype/add/", form).status_code == 302
    assert list(InstanceType.objects.filter(is_default=True).values_list("name", flat=True)) == ["gpu.large"]
    refused = client.post("/admin/compute/instancetype/add/", {**form, "name": "huge", "ram_mib": 10})
    assert refused.status_code == 200
    assert "ram_mib must be 64 to" in refused.content.decode()

    used = types["t1.micro"]
    instance_on(make_host("h1"), used)
    assert client.post(f"/admin/compute/instancetype/{used.pk}/delete/", {"post": "yes"}).status_code == 302
    assert InstanceType.objects.filter(pk=used.pk, is_active=False).exists()
    default = InstanceType.objects.get(name="gpu.large")
    changed = client.post(
        f"/admin/compute/instancetype/{default.pk}/change/",
        {**form, "is_active": ""},
    )
    assert changed.status_code == 200
    assert "make another type the default" in changed.content.decode()
    assert InstanceType.objects.get(pk=default.pk).is_active
