"""``manage.py host_add URI``: a libvirt host registered with the capacity libvirt reports and the ratios given;
bad input and unreachable or refusing hosts are told clearly and register nothing."""

from __future__ import annotations

import socket
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from compute.models import Host
from core.models import AuditEntry
from tests.compute.test_hypervisor import NODE, UNREACHABLE

pytestmark = pytest.mark.django_db


def host_add(*args: str) -> str:
    out = StringIO()
    call_command("host_add", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def node_uri(tmp_path) -> str:
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    return f"test://{node}"


def test_host_add_registers_the_capacity_libvirt_reports_with_the_ratios_given(node_uri):
    said = host_add(node_uri, "--name", "rack1-n01", "--cpu-ratio", "8", "--ram-ratio", "1.5")
    host = Host.objects.get()
    assert (host.name, host.uri, host.vcpus, host.ram_mib) == ("rack1-n01", node_uri, 4, 8192)
    assert (host.cpu_allocation_ratio, host.ram_allocation_ratio) == (Decimal("8"), Decimal("1.5"))
    assert "host.rack1-n01" in said
    entry = AuditEntry.objects.get(action="compute.host.registered")
    assert entry.details["cpu_allocation_ratio"] == "8.00"


def test_host_add_without_a_name_takes_it_from_the_uri_or_this_machine(node_uri):
    host_add(node_uri)
    host = Host.objects.get()
    assert host.name == socket.gethostname().split(".")[0]
    assert (host.cpu_allocation_ratio, host.ram_allocation_ratio) == (Decimal("4"), Decimal("1"))


def test_host_add_of_a_host_that_does_not_answer_says_so_and_registers_nothing():
    with pytest.raises(CommandError, match=r"not registered: .*try again when the host is up\. \[host-unreachable\]"):
        host_add(UNREACHABLE, "--name", "gone")
    assert not Host.objects.exists()


@pytest.mark.parametrize(
    ("uri", "said"),
    [
        ("not a uri", "Unable to parse URI not a uri"),
        ("test:///nonexistent/node.xml", "failed to parse xml document"),
    ],
)
def test_host_add_of_a_uri_libvirt_refuses_says_so_and_registers_nothing(uri, said):
    with pytest.raises(CommandError, match=rf"{said}.*\[host-refused\]"):
        host_add(uri, "--name", "bad")
    assert not Host.objects.exists()


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--name", "two words"], "host-name"),
        (["--name", "host.*"], "host-name"),
        (["--name=-dash"], "host-name"),
        (["--name", "ok", "--cpu-ratio", "0"], "host-ratio"),
        (["--name", "ok", "--ram-ratio", "1000"], "host-ratio"),
    ],
)
def test_host_add_refuses_bad_names_and_ratios_before_asking_libvirt(node_uri, args, code):
    with pytest.raises(CommandError, match=rf"\[{code}\]"):
        host_add(node_uri, *args)
    assert not Host.objects.exists()


def test_host_add_refuses_a_name_or_uri_already_registered(node_uri, tmp_path):
    host_add(node_uri, "--name", "n1")
    with pytest.raises(CommandError, match=r"already registered \[host-exists\]"):
        host_add(node_uri, "--name", "n2")
    other = tmp_path / "other.xml"
    other.write_text(NODE)
    with pytest.raises(CommandError, match=r"named n1 is already registered \[host-exists\]"):
        host_add(f"test://{other}", "--name", "n1")
    assert list(Host.objects.values_list("name", flat=True)) == ["n1"]


def test_the_admin_api_registers_a_host_with_ratios_and_refuses_a_name_that_is_no_queue_name(api_as, staff, node_uri):
    client = api_as(staff)
    refused = client.post("/api/v1/admin/hosts/", {"name": "host.*", "uri": node_uri}, format="json")
    assert refused.status_code == 400
    assert refused.json()["code"] == "host-name"
    assert not Host.objects.exists()
    body = {"name": "n1", "uri": node_uri, "cpu_allocation_ratio": "2.5", "ram_allocation_ratio": "1.25"}
    created = client.post("/api/v1/admin/hosts/", body, format="json")
    assert created.status_code == 201, created.json()
    assert (created.json()["cpu_allocation_ratio"], created.json()["ram_allocation_ratio"]) == ("2.50", "1.25")
