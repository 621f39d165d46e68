"""The libvirt adapter against libvirt's own test driver, and how its two kinds of failure reach users."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from compute import hypervisor
from compute.domain import DiskSpec, DomainSpec, domain_xml
from compute.models import Host
from compute.services import host_register
from core.errors import ApplicationError, PermanentError, TransientError, Unavailable

UNREACHABLE = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"


def test_host_info_reads_the_capacity_of_the_test_driver_host():
    info = hypervisor.host_info("test:///default")
    assert (info.vcpus, info.ram_mib, info.hypervisor) == (16, 3072, "TEST")


def test_a_host_whose_daemon_does_not_answer_is_a_transient_failure():
    with pytest.raises(hypervisor.HostUnreachable) as failed:
        hypervisor.host_info(UNREACHABLE)
    assert isinstance(failed.value, TransientError)
    assert "/nonexistent/libvirt-sock" in str(failed.value)


def test_a_host_that_answers_no_is_a_permanent_failure(tmp_path):
    bad = tmp_path / "host.xml"
    bad.write_text("<node><not-closed></node>")
    with pytest.raises(hypervisor.HypervisorRefused) as failed:
        hypervisor.host_info(f"test://{bad}")
    assert isinstance(failed.value, PermanentError)


@pytest.mark.django_db
def test_registering_an_unreachable_host_is_unavailable_and_changes_nothing(staff):
    with pytest.raises(Unavailable) as refused:
        host_register(actor=staff, name="down", uri=UNREACHABLE)
    assert refused.value.code == "host-unreachable"
    assert not Host.objects.exists()


@pytest.mark.django_db
def test_registering_a_host_libvirt_refuses_is_a_bad_request(staff, tmp_path):
    bad = tmp_path / "host.xml"
    bad.write_text("not xml")
    with pytest.raises(ApplicationError) as refused:
        host_register(actor=staff, name="bad", uri=f"test://{bad}")
    assert refused.value.status == 400
    assert refused.value.code == "host-refused"
    assert not Host.objects.exists()


# Domain lifecycle on libvirt's test driver: test:///default (one running domain `test`) and private file hosts.

DEFAULT = "test:///default"
NODE = """<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads><active>4</active>
    <mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>8388608</memory>
</node>"""


@pytest.fixture(autouse=True)
def _fresh_connections():
    yield
    hypervisor.disconnect_all()


@pytest.fixture
def file_host(tmp_path):
    node = tmp_path / "host.xml"
    node.write_text(NODE)
    return f"test://{node}"


def _xml(name: str, number: int = 1) -> str:
    spec = DomainSpec(
        name=name,
        uuid=uuid.UUID(int=number),
        vcpus=1,
        ram_mib=512,
        console_log=f"/var/log/alto/{name}.log",
        disks=(DiskSpec(target="vda", path=f"/var/lib/alto/{name}.qcow2"),),
    )
    return domain_xml(spec)


def test_a_defined_domain_is_shut_off_until_started():
    hypervisor.domain_define(DEFAULT, _xml("vm-a"))
    assert hypervisor.domain_state(DEFAULT, "vm-a") == hypervisor.SHUT_OFF
    hypervisor.domain_start(DEFAULT, "vm-a")
    assert hypervisor.domain_state(DEFAULT, "vm-a") == hypervisor.RUNNING


def test_defining_and_starting_twice_is_harmless():
    for _ in range(2):
        hypervisor.domain_define(DEFAULT, _xml("vm-a"))
    for _ in range(2):
        hypervisor.domain_start(DEFAULT, "vm-a")
    assert hypervisor.domain_state(DEFAULT, "vm-a") == hypervisor.RUNNING


def test_shutdown_ends_a_running_domain_and_leaves_a_stopped_one_alone():
    hypervisor.domain_define(DEFAULT, _xml("vm-a"))
    hypervisor.domain_start(DEFAULT, "vm-a")
    hypervisor.domain_shutdown(DEFAULT, "vm-a")
    assert hypervisor.domain_state(DEFAULT, "vm-a") == hypervisor.SHUT_OFF
    hypervisor.domain_shutdown(DEFAULT, "vm-a")
    assert hypervisor.domain_state(DEFAULT, "vm-a") == hypervisor.SHUT_OFF


def test_reboot_keeps_a_running_domain_running():
    hypervisor.domain_reboot(DEFAULT, "test")
    assert hypervisor.domain_state(DEFAULT, "test") == hypervisor.RUNNING


def test_rebooting_a_stopped_domain_is_refused():
    hypervisor.domain_define(DEFAULT, _xml("vm-a"))
    with pytest.raises(hypervisor.HypervisorRefused):
        hypervisor.domain_reboot(DEFAULT, "vm-a")


def test_destroy_and_undefine_are_idempotent():
    hypervisor.domain_define(DEFAULT, _xml("vm-a"))
    hypervisor.domain_start(DEFAULT, "vm-a")
    for _ in range(2):
        hypervisor.domain_destroy(DEFAULT, "vm-a")
        assert hypervisor.domain_state(DEFAULT, "vm-a") == hypervisor.SHUT_OFF
    for _ in range(2):
        hypervisor.domain_undefine(DEFAULT, "vm-a")
        assert hypervisor.domain_state(DEFAULT, "vm-a") == hypervisor.ABSENT
    hypervisor.domain_destroy(DEFAULT, "vm-a")


@pytest.mark.parametrize("operation", ["domain_start", "domain_shutdown", "domain_reboot"])
def test_acting_on_an_absent_domain_is_a_permanent_failure(operation):
    with pytest.raises(hypervisor.DomainAbsent) as failed:
        getattr(hypervisor, operation)(DEFAULT, "nowhere")
    assert isinstance(failed.value, PermanentError)
    assert "nowhere" in str(failed.value)


def test_xml_libvirt_refuses_is_a_permanent_failure():
    with pytest.raises(hypervisor.HypervisorRefused) as failed:
        hypervisor.domain_define(DEFAULT, "<domain type='qemu'><name>x</name></domain>")
    assert not isinstance(failed.value, hypervisor.DomainAbsent)


@pytest.mark.parametrize(
    ("operation", "args"),
    [
        ("domain_define", ("<domain/>",)),
        ("domain_start", ("vm-a",)),
        ("domain_state", ("vm-a",)),
        ("domain_shutdown", ("vm-a",)),
        ("domain_destroy", ("vm-a",)),
        ("domain_reboot", ("vm-a",)),
        ("domain_undefine", ("vm-a",)),
        ("domains", ()),
    ],
)
def test_every_operation_on_an_unreachable_host_is_a_transient_failure(operation, args):
    with pytest.raises(hypervisor.HostUnreachable):
        getattr(hypervisor, operation)(UNREACHABLE, *args)


def test_domains_lists_running_and_defined_domains_with_uuid_and_state():
    hypervisor.domain_define(DEFAULT, _xml("vm-b", 2))
    hypervisor.domain_define(DEFAULT, _xml("vm-a", 1))
    hypervisor.domain_start(DEFAULT, "vm-a")
    listed = hypervisor.domains(DEFAULT)
    assert [info.name for info in listed] == ["test", "vm-a", "vm-b"]
    assert listed[1] == hypervisor.DomainInfo(name="vm-a", uuid=uuid.UUID(int=1), state=hypervisor.RUNNING)
    assert listed[2].state == hypervisor.SHUT_OFF


def test_a_file_host_reports_its_node_and_keeps_its_domains_between_calls(file_host):
    info = hypervisor.host_info(file_host)
    assert (info.vcpus, info.ram_mib) == (4, 8192)
    hypervisor.domain_define(file_host, _xml("vm-a"))
    hypervisor.domain_start(file_host, "vm-a")
    assert hypervisor.domain_state(file_host, "vm-a") == hypervisor.RUNNING
    assert [info.name for info in hypervisor.domains(file_host)] == ["vm-a"]


def test_two_file_hosts_are_separate(tmp_path, file_host):
    other = tmp_path / "other.xml"
    other.write_text(NODE)
    hypervisor.domain_define(file_host, _xml("vm-a"))
    assert hypervisor.domains(f"test://{other}") == []


def test_threads_share_one_connection_per_host(file_host):
    names = [f"vm-{number}" for number in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda number: hypervisor.domain_define(file_host, _xml(names[number], number + 1)), range(8)))
    assert [info.name for info in hypervisor.domains(file_host)] == sorted(names)


def test_a_dead_connection_is_replaced_on_the_next_call(file_host):
    hypervisor.host_info(file_host)
    # The only way to kill a test-driver connection from outside: close it under the adapter.
    hypervisor._connections[file_host].close()
    assert hypervisor.host_info(file_host).vcpus == 4


def test_a_network_document_answers_only_its_hosts_by_dhcp_and_names_its_forward_mode():
    from lxml import etree

    spec = hypervisor.NetworkSpec(
        name="alto-local",
        bridge="br-local",
        forward="nat",
        gateway="172.16.0.1",
        prefix=24,
        hosts=(hypervisor.DhcpHost(mac="52:54:00:10:00:05", ip="172.16.0.5"),),
        ipv6_gateway="fd00:16::1",
        ipv6_prefix=64,
    )
    root = etree.fromstring(hypervisor.network_xml(spec).encode())
    assert root.find("forward").get("mode") == "nat" and root.find("bridge").get("name") == "br-local"
    assert root.find("ip/dhcp/range") is None  # every address belongs to a lease: no dynamic range
    assert [(h.get("mac"), h.get("ip")) for h in root.iterfind("ip/dhcp/host")] == [("52:54:00:10:00:05", "172.16.0.5")]
    assert [(ip.get("family"), ip.get("address")) for ip in root.iterfind("ip")] == [
        (None, "172.16.0.1"),
        ("ipv6", "fd00:16::1"),
    ]
    with pytest.raises(hypervisor.HypervisorRefused, match="forward mode"):
        hypervisor.network_xml(
            hypervisor.NetworkSpec(name="x", bridge="b", forward="bridge'/>", gateway="1.2.3.4", prefix=24)
        )


def test_dhcp_host_entries_are_added_replaced_and_removed_idempotently_on_the_test_driver(tmp_path):
    uri = "test:///default"
    spec = hypervisor.NetworkSpec(name="alto-t1", bridge="br-t1", forward="route", gateway="203.0.113.1", prefix=28)
    try:
        assert hypervisor.network_ensure(uri, spec) is True
        assert hypervisor.network_ensure(uri, spec) is False
        first = hypervisor.DhcpHost(mac="52:54:00:71:00:05", ip="203.0.113.5")
        assert hypervisor.network_dhcp_host_add(uri, "alto-t1", first) is True
        assert hypervisor.network_dhcp_host_add(uri, "alto-t1", first) is False
        # The same MAC with another address replaces the entry (a lease given to a new NIC never shares an answer).
        moved = hypervisor.DhcpHost(mac="52:54:00:71:00:05", ip="203.0.113.6")
        assert hypervisor.network_dhcp_host_add(uri, "alto-t1", moved) is True
        assert hypervisor.network_dhcp_hosts(uri, "alto-t1") == {("52:54:00:71:00:05", "203.0.113.6")}
        assert hypervisor.network_dhcp_host_remove(uri, "alto-t1", moved) is True
        assert hypervisor.network_dhcp_host_remove(uri, "alto-t1", moved) is False
        assert hypervisor.network_dhcp_hosts(uri, "alto-t1") == set()
    finally:
        hypervisor.network_remove(uri, "alto-t1")
    assert "alto-t1" not in hypervisor.networks(uri)
