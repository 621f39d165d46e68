"""The libvirt adapter against libvirt's own test driver, and how its two kinds of failure reach users."""

from __future__ import annotations

import pytest

from compute import hypervisor
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
