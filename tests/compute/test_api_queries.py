"""The compute list endpoints that test_api.py does not count: instance types and room for VMs answer in a fixed
number of queries however many types, hosts and instances there are."""

from __future__ import annotations

import pytest

from accounts.models import Quota
from compute.models import InstanceType

pytestmark = pytest.mark.django_db


def test_instance_types_list_takes_a_fixed_number_of_queries(api_as, owner, types, django_assert_max_num_queries):
    client = api_as(owner)
    with django_assert_max_num_queries(2) as few:
        assert len(client.get("/api/v1/compute/instance-types/").json()["results"]) == 7
    for number in range(10):
        InstanceType.objects.create(name=f"x{number}.large", vcpus=2, ram_mib=1024 * (number + 1))
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert len(client.get("/api/v1/compute/instance-types/").json()["results"]) == 17


def test_capacity_takes_a_fixed_number_of_queries(
    api_as, owner, types, make_host, instance_on, django_assert_max_num_queries
):
    client = api_as(owner)
    host = make_host("h0")
    instance_on(host, types["m1.small"])
    with django_assert_max_num_queries(3) as few:
        before = client.get("/api/v1/compute/capacity/").json()
    for number in range(1, 11):
        more = make_host(f"h{number}")
        instance_on(more, types["t1.micro"], name=f"vm{number}")
    with django_assert_max_num_queries(len(few.captured_queries)):
        after = client.get("/api/v1/compute/capacity/").json()
    assert len(after) == len(before) == 7
    rows = {row["instance_type"]: row for row in after}
    assert rows["m1.xlarge"]["fits_now"] > 0


def test_requesting_a_vm_takes_a_fixed_number_of_queries(
    api_as, owner, project, image, types, networks, make_host, owner_key, django_assert_max_num_queries
):
    """Access is checked once, the instance quotas are counted in one query, the network read once, the image's
    ports read once for its firewall: 24 queries (with the test's savepoints), however many hosts, instances and
    projects the site has."""
    client = api_as(owner)

    def body(name: str) -> dict:
        return {
            "name": name,
            "image": image.identifier,
            "instance_type": "t1.micro",
            "network": "private",
            "ssh_keys": [owner_key.pk],
            "project": project.pk,
        }

    make_host("h0", vcpus=64, ram_mib=65536)
    Quota.objects.filter(project=project).update(instances=100, vcpus=100, ram_mib=10**6)
    assert client.post("/api/v1/compute/instances/", body("vm0"), format="json").status_code == 202
    with django_assert_max_num_queries(24) as few:
        assert client.post("/api/v1/compute/instances/", body("vm1"), format="json").status_code == 202
    counted = len(few.captured_queries)
    for number in range(2, 12):
        make_host(f"h{number}", vcpus=64, ram_mib=65536)
        assert client.post("/api/v1/compute/instances/", body(f"vm{number}"), format="json").status_code == 202
    with django_assert_max_num_queries(counted):
        assert client.post("/api/v1/compute/instances/", body("vm99"), format="json").status_code == 202
