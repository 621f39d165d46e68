"""200 instance requests at once on PostgreSQL: the quota, the hosts' room and the lease pool each hold."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection
from django.db.models import Count, Sum

from accounts.quotas import QuotaExceeded, quota_set
from compute.models import Host, Instance, Lease
from compute.services import instance_request
from core.errors import Conflict
from tests.race import race

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

REQUESTS = 200
# The test server allows 100 connections and is shared: all 200 calls start together behind race()'s barrier
# but at most this many hold a database connection at a time.
IN_DATABASE = 40


def requests(*, owner, project, image, itype, network):
    gate = threading.BoundedSemaphore(IN_DATABASE)

    def one(n: int):
        def call():
            with gate:
                try:
                    return instance_request(
                        actor=owner,
                        project=project,
                        image=image,
                        instance_type=itype,
                        network=network,
                        ssh_keys=[],
                        name=f"vm{n}",
                    )
                finally:
                    connection.close()

        return call

    return [one(n) for n in range(REQUESTS)]


@pytest.fixture
def cluster(make_host, types, networks):
    """Three hosts of 2 cores (8 vCPUs at the default ratio 4) and 8 GiB: room for 24 t1.micro."""
    return [make_host(f"h{i}", vcpus=2, ram_mib=8192) for i in range(3)]


def assert_nothing_oversold(expected: int) -> None:
    assert Instance.objects.count() == expected
    for host in Host.objects.annotate(vcpus_used=Sum("instances__vcpus"), ram_used=Sum("instances__ram_mib")):
        assert (host.vcpus_used or 0) <= host.vcpus * host.cpu_allocation_ratio
        assert (host.ram_used or 0) <= host.ram_mib * host.ram_allocation_ratio
    held = Lease.objects.exclude(instance=None)
    assert held.count() == expected
    assert not held.values("ip").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert not Instance.objects.filter(lease__isnull=True).exists()


def test_200_requests_against_a_quota_of_20_make_exactly_20_instances(owner, staff, project, image, types, cluster):
    quota_set(actor=staff, project=project, limits={"instances": 20, "vcpus": 1000, "ram_mib": 10**6})
    outcomes = race(requests(owner=owner, project=project, image=image, itype=types["t1.micro"], network="private"))
    made = [o for o in outcomes if isinstance(o, Instance)]
    refused = Counter(type(o).__name__ for o in outcomes if not isinstance(o, Instance))
    assert len(made) == 20, refused
    assert refused == {"QuotaExceeded": 180}
    assert_nothing_oversold(20)
    print(
        f"quota race: {len(made)} made, refused {dict(refused)}, per host",
        dict(Counter(i.host.name for i in Instance.objects.select_related("host"))),
    )


def test_200_requests_against_room_for_24_fill_the_hosts_and_no_more(owner, staff, project, image, types, cluster):
    quota_set(actor=staff, project=project, limits={"instances": 1000, "vcpus": 1000, "ram_mib": 10**6})
    outcomes = race(requests(owner=owner, project=project, image=image, itype=types["t1.micro"], network="private"))
    made = [o for o in outcomes if isinstance(o, Instance)]
    codes = Counter(o.code for o in outcomes if isinstance(o, Conflict) and not isinstance(o, QuotaExceeded))
    assert len(made) == 24 and codes == {"no-host": 176}
    assert_nothing_oversold(24)
    assert set(Counter(i.host_id for i in Instance.objects.all()).values()) == {8}


def test_200_requests_for_13_public_addresses_take_each_once(owner, staff, project, image, types, cluster):
    quota_set(
        actor=staff, project=project, limits={"instances": 1000, "vcpus": 1000, "ram_mib": 10**6, "public_ips": 1000}
    )
    outcomes = race(requests(owner=owner, project=project, image=image, itype=types["t1.micro"], network="public"))
    made = [o for o in outcomes if isinstance(o, Instance)]
    codes = Counter(getattr(o, "code", type(o).__name__) for o in outcomes if not isinstance(o, Instance))
    assert len(made) == 13 and codes == {"no-free-address": 187}
    assert_nothing_oversold(13)
