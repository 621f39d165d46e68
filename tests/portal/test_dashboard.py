# ruff: noqa: F811 - pytest fixtures imported from the compute tests are parameters of the tests below
"""The researcher's dashboard: their VMs (live), totals, quota bars per project and room for VMs."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.quotas import quota_set
from accounts.services import project_create
from compute.models import Host, Instance
from tests.compute.conftest import (  # noqa: F401 - the compute tests' fixtures
    _signed_cache,
    enqueued,
    entry_for,
    image,
    instance_on,
    keyring,
    networks,
    outsider,
    owner,
    registered,
    staff,
    types,
)
from tests.marketplace.keys import pgp_keys  # noqa: F401 - a session fixture entry_for needs

pytestmark = pytest.mark.django_db


@pytest.fixture
def host(db):
    return Host.objects.create(name="h1", uri="test:///default", vcpus=8, ram_mib=16384)


def test_an_anonymous_visitor_gets_the_welcome_and_no_dashboard(client):
    page = client.get("/").content.decode()
    assert "to request machines and disks" in page
    assert "My virtual machines" not in page
    assert client.get("/dashboard/instances/").status_code == 302


def test_the_dashboard_lists_my_live_vms_with_totals_and_not_the_ended_ones(client, owner, types, host, instance_on):
    instance_on(host, types["m1.large"], name="big")
    running = instance_on(host, types["t1.micro"], name="small")
    Instance.objects.filter(pk=running.pk).update(cpu_percent=12.34)
    instance_on(host, types["t1.micro"], name="gone", state="terminated")
    client.force_login(owner)
    page = client.get("/").content.decode()
    assert f'data-instance="{running.uuid}" data-state="running"' in page
    assert ">big</a>" in page and ">small</a>" in page and ">gone</a>" not in page
    assert 'data-role="cpu">12.3 %' in page
    assert "Total: 2 VMs" in page
    assert '<td class="num">3</td><td class="num">6656 MiB</td>' in page  # 2 + 1 vCPU, 6144 + 512 MiB


def test_no_one_sees_the_vms_of_a_project_they_are_not_in(client, outsider, types, host, instance_on):
    instance_on(host, types["t1.micro"], name="private-work")
    client.force_login(outsider)
    for url in ("/", "/dashboard/instances/"):
        assert "private-work" not in client.get(url).content.decode()


def test_the_table_partial_polls_fast_while_a_vm_moves_and_slowly_once_settled(client, owner, types, host, instance_on):
    vm = instance_on(host, types["t1.micro"], state="booting")
    client.force_login(owner)
    part = client.get("/dashboard/instances/").content.decode()
    assert part.startswith("{#") is False and '<div id="instances"' in part
    assert 'hx-trigger="every 2s"' in part and 'data-state="booting"' in part
    Instance.objects.filter(pk=vm.pk).update(state="running")
    part = client.get("/dashboard/instances/").content.decode()
    assert 'hx-trigger="every 10s"' in part and 'data-state="running"' in part
    # A checked box survives the refresh: htmx keeps elements marked hx-preserve (by id).
    assert f'id="select-{vm.uuid}" form="bulk" hx-preserve' in part


def test_quota_bars_show_each_project_i_am_in(client, owner, staff, project, types, host, instance_on):
    quota_set(actor=staff, project=project, limits={"vcpus": 8})
    instance_on(host, types["m1.large"])
    project_create(actor=staff, name="second", manager=owner)
    client.force_login(owner)
    page = client.get("/").content.decode()
    climate = page.split('data-project="climate"')[1].split("</table>")[0]
    assert '<meter min="0" max="8" value="2" aria-label="vCPU used">2</meter>' in climate
    assert "2 of 8" in climate
    assert 'data-project="second"' in page


def test_room_for_vms_shows_how_many_more_fit_of_each_type_with_a_chart(client, owner, types, host, instance_on):
    # 8 vCPU × 4 overcommit = 32, 16384 MiB × 1: t1.micro (1 vCPU, 512 MiB) fits 32 on the empty host.
    instance_on(host, types["m1.large"])  # 2 vCPU, 6144 MiB used: 30 vCPU and 10240 MiB left → 20 micro
    client.force_login(owner)
    page = client.get("/").content.decode()
    row = page.split('<tr data-type="t1.micro">')[1].split("</tr>")[0]
    assert '<td class="num">20 / 32</td>' in row
    assert 'aria-label="t1.micro: 20 more fit out of 32"' in row
    assert '<rect class="room-free" x="0" y="0" width="150" height="14"' in row  # 240 px × 20/32


def test_room_for_vms_with_no_host_taking_vms_says_so(client, owner, types, host):
    Host.objects.update(maintenance=True)
    client.force_login(owner)
    page = client.get("/").content.decode()
    assert '<td class="num">0 / 0</td>' in page


def test_the_dashboard_reads_a_fixed_number_of_queries_however_many_vms(client, owner, types, host, instance_on):
    client.force_login(owner)
    instance_on(host, types["t1.micro"], name="first")
    client.get("/")  # the session and content types are cached from here on

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/").status_code == 200
        return len(captured.captured_queries)

    few = queries()
    for n in range(6):
        instance_on(host, types["t1.micro"], name=f"more-{n}")
    assert queries() == few
    assert few <= 20


def test_the_table_partial_reads_a_fixed_number_of_queries(client, owner, types, host, instance_on):
    client.force_login(owner)
    instance_on(host, types["t1.micro"], name="first")
    client.get("/dashboard/instances/")
    with CaptureQueriesContext(connection) as one:
        client.get("/dashboard/instances/")
    for n in range(5):
        instance_on(host, types["t1.micro"], name=f"more-{n}")
    with CaptureQueriesContext(connection) as six:
        client.get("/dashboard/instances/")
    assert len(six.captured_queries) == len(one.captured_queries) <= 8


def test_a_refresh_after_the_session_ended_reloads_the_page_instead_of_showing_the_login_form_in_the_table(client):
    answer = client.get("/dashboard/instances/", headers={"HX-Request": "true"})
    assert answer.status_code == 200
    assert answer["HX-Refresh"] == "true"
    assert answer.content == b""


def test_a_vm_action_asked_on_the_dashboard_comes_back_to_the_dashboard(client, owner, types, host, instance_on):
    vm = instance_on(host, types["t1.micro"], state="stopped")
    client.force_login(owner)
    answer = client.post(f"/instances/{vm.uuid}/start/", {"back": "dashboard"})
    assert answer["Location"] == "/"
    # Anything else comes back to the VM's page: the form cannot send the user elsewhere.
    answer = client.post(f"/instances/{vm.uuid}/start/", {"back": "https://evil.example/"})
    assert answer["Location"] == f"/instances/{vm.uuid}/"


def test_a_checkout_without_the_vendored_htmx_fails_its_system_check(settings, tmp_path):
    from portal.checks import vendor_files_check

    assert vendor_files_check() == []  # make install put it there
    settings.BASE_DIR = tmp_path
    [error] = vendor_files_check()
    assert error.id == "portal.E001" and "make install" in error.hint
