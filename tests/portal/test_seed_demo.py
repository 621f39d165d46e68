from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from compute.models import Host, InstanceType

pytestmark = pytest.mark.django_db


def _seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def test_seed_demo_prints_the_logins_and_loads_types_and_a_host():
    output = _seed()
    assert "username admin" in output and "password admin-demo-pass" in output
    assert "username researcher" in output
    assert get_user_model().objects.get(username="admin").is_staff
    assert not get_user_model().objects.get(username="researcher").is_staff
    assert InstanceType.objects.count() == 7
    assert InstanceType.objects.get(is_default=True).name == "m1.small"
    assert InstanceType.objects.get(name="c1.xlarge").vcpus == 4
    host = Host.objects.get()
    assert host.uri == "test:///default"
    assert host.vcpus > 0 and host.ram_mib > 0  # as libvirt's test driver reported it


def test_seed_demo_run_twice_changes_nothing():
    _seed()
    counts = (get_user_model().objects.count(), InstanceType.objects.count(), Host.objects.count())
    output = _seed()
    assert (get_user_model().objects.count(), InstanceType.objects.count(), Host.objects.count()) == counts
    assert "password researcher-demo-pass" in output
