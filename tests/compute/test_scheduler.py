"""The scheduler: which hosts are candidates, spread and pack, overcommit, why nothing fits, and the
room for VMs on a known cluster."""

from __future__ import annotations

import threading

import pytest
from django.db import DatabaseError, connection, transaction

from compute.models import Host
from compute.scheduler import capacity, place
from core.errors import Conflict

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(instance_on):
    """``run(host, itype, n)``: put ``n`` live instances of ``itype`` on ``host``."""

    def put(host, itype, n=1, state="running"):
        for i in range(n):
            instance_on(host, itype, state=state, name=f"vm-{host.name}-{i}")

    return put


def placed(itype):
    with transaction.atomic():
        return place(instance_type=itype)


def test_spread_puts_the_instance_on_the_host_with_most_free_ram(settings, make_host, types, run):
    settings.SCHEDULER_STRATEGY = "spread"
    small, big = make_host("small", ram_mib=8192), make_host("big", ram_mib=16384)
    assert placed(types["m1.small"]) == big
    run(big, types["m1.xlarge"])  # big has 8192 MiB free, small 8192: the lower pk wins a tie
    assert placed(types["m1.small"]) == small


def test_pack_fills_the_fullest_host_that_still_has_room(settings, make_host, types, run):
    settings.SCHEDULER_STRATEGY = "pack"
    small, big = make_host("small", ram_mib=8192), make_host("big", ram_mib=16384)
    assert placed(types["m1.small"]) == small
    run(small, types["m1.large"])  # 2048 MiB left on small: m1.small (1536) still fits there
    assert placed(types["m1.small"]) == small
    assert placed(types["m1.medium"]) == big


def test_hosts_disabled_in_maintenance_or_down_get_no_instances(make_host, types):
    make_host("off", enabled=False, ram_mib=65536)
    make_host("service", maintenance=True, ram_mib=65536)
    make_host("dead", state="down", ram_mib=65536)
    ok = make_host("ok", ram_mib=4096)
    assert placed(types["m1.small"]) == ok


def test_vcpus_are_overcommitted_by_the_host_ratio_and_ram_is_not(make_host, types, run):
    host = make_host("h", vcpus=2, ram_mib=65536)  # cpu ratio 4 → 8 vCPUs, RAM ratio 1
    run(host, types["m1.xlarge"], 1)  # 4 vCPUs
    assert placed(types["c1.xlarge"]) == host  # 4 more: 8 of 8
    run(host, types["c1.xlarge"], 1)
    with pytest.raises(Conflict, match="1 host full"):
        placed(types["t1.micro"])


def test_ram_overcommit_follows_the_ram_ratio(make_host, types, run):
    host = make_host("h", vcpus=64, ram_mib=8192, ram_allocation_ratio=2)
    run(host, types["m1.xlarge"], 1)
    assert placed(types["m1.xlarge"]) == host


def test_terminated_instances_free_their_room(make_host, types, run):
    host = make_host("h", vcpus=1, ram_mib=8192, cpu_allocation_ratio=1)
    run(host, types["t1.micro"], 1, state="terminated")
    assert placed(types["t1.micro"]) == host


def test_when_nothing_fits_the_reason_counts_the_hosts_by_why(make_host, types, run):
    for i in range(3):
        run(make_host(f"full{i}", vcpus=4, ram_mib=8192), types["m1.xlarge"])
    make_host("m1", maintenance=True)
    make_host("m2", maintenance=True)
    make_host("down", state="down")
    make_host("off", enabled=False)
    with pytest.raises(Conflict) as refused:
        placed(types["m1.xlarge"])
    assert refused.value.status == 409 and refused.value.code == "no-host"
    assert refused.value.message == (
        "no host has room for m1.xlarge: 3 hosts full, 2 in maintenance, 1 down, 1 disabled"
    )


def test_with_no_host_registered_the_reason_says_so(types):
    with pytest.raises(Conflict, match="no host is registered"):
        placed(types["t1.micro"])


def test_room_for_vms_on_a_known_cluster(make_host, types, run, django_assert_max_num_queries):
    a = make_host("a", vcpus=4, ram_mib=16384)  # 16 vCPUs after overcommit
    make_host("b", vcpus=2, ram_mib=8192)  # 8 vCPUs
    make_host("off", vcpus=64, ram_mib=65536, enabled=False)  # not counted
    run(a, types["m1.xlarge"])  # a: 12 vCPUs, 8192 MiB left
    with django_assert_max_num_queries(3):
        room = {r.instance_type.name: (r.fits_now, r.fits_when_empty) for r in capacity()}
    assert room["m1.xlarge"] == (1 + 1, 2 + 1)  # RAM-bound: 8192/8192 on a, 8192/8192 on b
    assert room["t1.micro"] == (12 + 8, 16 + 8)  # vCPU-bound
    assert room["m1.large"] == (1 + 1, 2 + 1)
    assert room["c1.xlarge"] == (1 + 1, 2 + 1)
    assert len(room) == 7


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_placement_locks_only_its_host_and_the_next_takes_the_best_host_not_held(settings, make_host, types):
    settings.SCHEDULER_STRATEGY = "spread"
    big, middle, small = (make_host(name, ram_mib=ram) for name, ram in [("big", 16384), ("mid", 12288), ("s", 8192)])
    holding, release = threading.Event(), threading.Event()
    first: list[Host] = []

    def first_placement() -> None:
        try:
            with transaction.atomic():
                first.append(place(instance_type=types["t1.micro"]))
                holding.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=first_placement)
    thread.start()
    try:
        assert holding.wait(30) and first == [big]
        with transaction.atomic():
            # The other hosts are free to lock: the first placement holds its own host only.
            assert Host.objects.select_for_update(nowait=True).filter(pk__in=[middle.pk, small.pk]).count() == 2
        with transaction.atomic(), pytest.raises(DatabaseError):  # could not obtain lock
            Host.objects.select_for_update(nowait=True).get(pk=big.pk)
        # A concurrent placement does not wait for the best host: it takes the best one nobody holds.
        assert placed(types["t1.micro"]) == middle
    finally:
        release.set()
        thread.join(30)
