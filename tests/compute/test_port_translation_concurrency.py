"""100 VM requests at once on ``local`` (PostgreSQL): each gets its front-end ports, and no port is given twice."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection

from accounts.quotas import quota_set
from compute.models import Instance, PortTranslation
from compute.services import instance_request
from tests.race import race

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

REQUESTS = 100
# The test server allows 100 connections and is shared: all calls start together behind race()'s barrier, at most
# this many hold a database connection at a time.
IN_DATABASE = 40


@pytest.fixture
def front_end(settings):
    settings.PORT_TRANSLATION_HOST = "front.example.org"
    settings.PORT_TRANSLATION_ADDRESS = "192.0.2.10"
    settings.PORT_TRANSLATION_PORTS = [22, 80]
    return settings


def _requests(*, owner, project, image, itype):
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
                        network="local",
                        ssh_keys=[],
                        name=f"vm{n}",
                    )
                finally:
                    connection.close()

        return call

    return [one(n) for n in range(REQUESTS)]


def test_100_concurrent_requests_on_local_never_give_a_front_end_port_twice(
    owner, staff, project, ported_image, types, networks, make_host, front_end
):
    make_host("big1", vcpus=64, ram_mib=256 * 1024)
    make_host("big2", vcpus=64, ram_mib=256 * 1024)
    quota_set(actor=staff, project=project, limits={"instances": 1000, "vcpus": 1000, "ram_mib": 10**7})
    outcomes = race(_requests(owner=owner, project=project, image=ported_image, itype=types["t1.micro"]))
    refused = Counter(f"{type(o).__name__} {getattr(o, 'code', o)}" for o in outcomes if not isinstance(o, Instance))
    assert not refused, refused
    rows = list(PortTranslation.objects.values_list("instance_id", "guest_port", "front_address", "front_port"))
    # Each VM got ssh and http (not 5432: the site translates 22 and 80 only), each on a port of its own.
    assert len(rows) == 2 * REQUESTS
    assert Counter(guest_port for _vm, guest_port, _a, _p in rows) == {22: REQUESTS, 80: REQUESTS}
    assert len({(address, port) for _vm, _g, address, port in rows}) == 2 * REQUESTS
    assert all(15000 <= port <= 17000 and address == "192.0.2.10" for _vm, _g, address, port in rows)
    assert set(Instance.objects.values_list("pk", flat=True)) == {vm for vm, *_ in rows}
