from __future__ import annotations

from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command

from compute.models import Host, InstanceType, Lease, Network
from compute.scheduler import capacity
from marketplace import policy
from marketplace.models import Entry, Image
from storage.models import Volume

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
    host = Host.objects.get(name="demo-host")
    assert host.uri == "test:///default"
    assert host.vcpus > 0 and host.ram_mib > 0  # as libvirt's test driver reported it


def test_seed_demo_registers_simulated_hosts_of_different_sizes_and_the_three_networks():
    _seed()
    sizes = {h.name: (h.vcpus, h.ram_mib) for h in Host.objects.exclude(name="demo-host")}
    assert sizes == {"demo-large": (32, 65536), "demo-medium": (16, 32768), "demo-small": (8, 16384)}
    large = Host.objects.get(name="demo-large")
    assert large.uri == f"test://{(settings.VAR_DIR / 'demo-hosts' / 'demo-large.xml').resolve()}"
    networks = {n.kind: n.cidr for n in Network.objects.all()}
    assert networks == {"private": "10.42.0.0/24", "local": "172.20.0.0/24", "public": "203.0.113.0/24"}
    assert Lease.objects.filter(network__kind="public").count() == 253
    room = {r.instance_type.name: r for r in capacity()}
    assert room["m1.xlarge"].fits_now == room["m1.xlarge"].fits_when_empty > 0


def test_seed_demo_run_twice_changes_nothing():
    _seed()
    counts = (
        get_user_model().objects.count(),
        InstanceType.objects.count(),
        Host.objects.count(),
        Entry.objects.count(),
        Network.objects.count(),
        Lease.objects.count(),
    )
    output = _seed()
    assert (
        get_user_model().objects.count(),
        InstanceType.objects.count(),
        Host.objects.count(),
        Entry.objects.count(),
        Network.objects.count(),
        Lease.objects.count(),
    ) == counts
    assert "password researcher-demo-pass" in output


def test_seed_demo_fills_the_marketplace_with_signed_entries_and_a_site_endorsement(client):
    output = _seed()
    assert "username creator" in output and "password creator-demo-pass" in output
    assert Image.objects.count() == 4
    ubuntu = Image.objects.get(os="Ubuntu")
    assert {e.endorser.email for e in Entry.objects.filter(image=ubuntu, is_latest=True)} == {
        "creator@example.org",
        settings.MARKETPLACE_SITE_KEY_EMAIL,
    }
    assert policy.evaluate(ubuntu).allowed
    centos = Image.objects.get(os="CentOS")
    latest = Entry.objects.get(image=centos, is_latest=True)
    assert latest.deprecated and "end of life" in latest.deprecated_reason
    assert not policy.evaluate(centos).allowed
    # The image files the entries point at exist and match their checksums.
    location = Entry.objects.get(image=ubuntu, endorser__email="creator@example.org", is_latest=True).locations[0]
    assert location.startswith("file://")
    page = client.get("/marketplace/", {"os": "debian"})
    assert b"Debian 12 grid worker" in page.content


def test_seed_demo_gives_the_researcher_a_first_volume_on_the_file_backend_under_var(settings, tmp_path):
    settings.STORAGE_FILE_DIR = tmp_path / "volumes"
    output = _seed()
    _seed()
    (volume,) = Volume.objects.all()
    assert (volume.name, volume.created_by.username, volume.backend, volume.state) == (
        "demo-scratch", "researcher", "file", "creating",
    )  # fmt: skip
    assert volume.path.startswith(str(settings.STORAGE_FILE_DIR))
    assert settings.STORAGE_FILE_DIR.is_dir()
    assert "Volumes: the file backend" in output
