"""The console log of a VM: read on its host by the host's worker (the log lives there), sent back to the API that
waits for it, as Nova's API asks nova-compute for console output."""

from __future__ import annotations

import uuid

import pytest

from compute import execution

pytestmark = pytest.mark.django_db


@pytest.fixture
def vm(make_host, types, instance_on, settings, tmp_path):
    settings.INSTANCE_DIR = tmp_path / "instances"
    return instance_on(make_host(f"console-{uuid.uuid4().hex[:8]}"), types["t1.micro"])


def console_of(vm):
    path = execution.instance_dir(vm) / "console.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_the_host_reads_the_tail_of_the_console_log(vm):
    console_of(vm).write_bytes(b"boot messages\n" * 1000 + b"ALTO-SEED-KEY: ssh-ed25519 AAAA\nlogin: ")

    assert execution.instance_console_tail(vm.pk, max_bytes=12) == "AAAA\nlogin: "
    assert execution.instance_console_tail(vm.pk, max_bytes=10**6).startswith("boot messages\n")


def test_a_console_with_nothing_printed_yet_is_empty_and_bad_bytes_are_replaced(vm):
    assert execution.instance_console_tail(vm.pk, max_bytes=100) == ""

    console_of(vm).write_bytes(b"caf\xe9 \xff\n")

    assert execution.instance_console_tail(vm.pk, max_bytes=100) == "caf\ufffd \ufffd\n"


def test_when_no_worker_of_the_host_answers_the_api_says_so(vm, api_as, owner, settings):
    settings.COMPUTE_CONSOLE_TIMEOUT = 1

    response = api_as(owner).get(f"/api/v1/compute/instances/{vm.uuid}/console/", HTTP_ACCEPT="application/json")

    assert response.status_code == 503
    assert response.json()["code"] == "host-unavailable"
    assert vm.host.name in response.json()["detail"]


@pytest.mark.parametrize("wanted", ["0", "-1", "abc", str(2 * 1024 * 1024)])
def test_a_bad_size_is_refused_before_the_host_is_asked(vm, api_as, owner, wanted):
    response = api_as(owner).get(
        f"/api/v1/compute/instances/{vm.uuid}/console/?bytes={wanted}", HTTP_ACCEPT="application/json"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "console-bytes"


def test_an_outsider_gets_the_same_not_found_as_for_a_missing_instance(vm, api_as, outsider):
    client = api_as(outsider)

    theirs = client.get(f"/api/v1/compute/instances/{vm.uuid}/console/", HTTP_ACCEPT="text/plain")
    missing = client.get(f"/api/v1/compute/instances/{uuid.uuid4()}/console/", HTTP_ACCEPT="text/plain")

    assert theirs.status_code == missing.status_code == 404
    assert theirs.content == missing.content
