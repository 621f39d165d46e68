"""The compute list endpoints that test_api.py does not count: instance types and room for VMs answer in a fixed
number of queries however many types, hosts and instances there are."""

from __future__ import annotations

import pytest

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
