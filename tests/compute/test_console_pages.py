"""The admin console's compute pages: hosts (load, maintenance), networks and leases, instance types, and every
instance and volume of the site with filters. Staff only; every change through a service, audited."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from accounts.services import project_create
from compute import scheduler
from compute.models import Host, InstanceType
from compute.networks import lease_take
from core.models import AuditEntry
from storage.models import Volume
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

CONSOLE_PAGES = [
    "/console/hosts/",
    "/console/networks/",
    "/console/instance-types/",
    "/console/instances/",
    "/console/volumes/",
]


@pytest.fixture
def world(make_host, types, networks, instance_on):
    """Two hosts (one busy), and VMs holding private addresses."""
    busy = make_host("hv1", vcpus=4, ram_mib=8192, cpu_allocation_ratio=2)
    idle = make_host("hv2", vcpus=8, ram_mib=16384)
    vms = []
    for name, itype, state in [("alpha", "m1.large", "running"), ("beta", "t1.micro", "stopped")]:
        with transaction.atomic():
            vm = instance_on(busy, types[itype], state=state, name=name)
            lease_take(network_kind="private", instance=vm)
        vms.append(vm)
    instance_on(busy, types["t1.micro"], state="terminated", name="gone")
    return {"busy": busy, "idle": idle, "vms": vms}


def _volume(project, name: str, *, state: str = "available", owner=None, size_gib: int = 5) -> Volume:
    return Volume.objects.create(
        name=name,
        project=project,
        created_by=owner,
        kind="persistent",
        size_gib=size_gib,
        backend="file",
        format="qcow2",
        path=f"/nonexistent/{name}.qcow2",
        state=state,
    )


# --- who may open the console --------------------------------------------------------------------------


@pytest.mark.parametrize("url", CONSOLE_PAGES)
def test_a_researcher_opening_a_console_page_gets_the_sites_403_page(client, owner, url):
    client.force_login(owner)
    answer = client.get(url)
    assert answer.status_code == 403
    page = answer.content.decode()
    assert "<h1>Not allowed</h1>" in page and "This page is for the site&#x27;s administrators." in page
    assert 'class="topbar"' in page  # the site's layout, not a bare "403 Forbidden"


@pytest.mark.parametrize("url", CONSOLE_PAGES)
def test_an_anonymous_visitor_opening_a_console_page_goes_to_the_login_page(client, url):
    answer = client.get(url)
    assert answer.status_code == 302 and answer["Location"] == f"/accounts/login/?next={url}"


@pytest.mark.parametrize("url", CONSOLE_PAGES)
def test_staff_open_every_console_page_with_the_console_navigation(client, staff, url):
    client.force_login(staff)
    answer = client.get(url)
    assert answer.status_code == 200
    page = answer.content.decode()
    assert 'aria-label="Admin console"' in page and 'aria-current="page"' in page
    for link in ("/accounts/console/registrations/", "/marketplace/console/", "/console/audit/"):
        assert f'href="{link}"' in page


def test_the_console_link_is_in_the_header_for_staff_only(client, staff, owner):
    client.force_login(owner)
    assert 'href="/console/">Console' not in client.get("/marketplace/").content.decode()
    client.force_login(staff)
    assert 'href="/console/">Console' in client.get("/marketplace/").content.decode()
    assert client.get("/console/").status_code == 200


def test_a_researcher_cannot_put_a_host_into_maintenance(client, owner, make_host):
    host = make_host("hv1")
    client.force_login(owner)
    assert client.post(f"/console/hosts/{host.pk}/maintenance/set/").status_code == 403
    host.refresh_from_db()
    assert host.maintenance is False
    assert not AuditEntry.objects.filter(action__startswith="compute.host.maintenance").exists()


# --- hosts ------------------------------------------------------------------------------------------------


def test_hosts_show_their_load_under_overcommit_and_their_live_instances(client, staff, world):
    client.force_login(staff)
    answer = client.get("/console/hosts/")
    page = answer.content.decode()
    busy = page.split('data-host="hv1"')[1].split("</tr>")[0]
    # m1.large (2 vCPU, 6144 MiB) + t1.micro (1, 512); the terminated VM counts for nothing.
    assert '<td class="vcpus">3 / 8\n' in busy and "(4 × 2)" in busy
    assert "6656 / 8192 MiB" in busy
    assert '<td class="instances"><a href="/console/instances/?host=hv1">2</a></td>' in busy
    assert 'data-status="up"' in page.split('data-host="hv1"')[1][:40]
    idle = page.split('data-host="hv2"')[1].split("</tr>")[0]
    assert '<td class="vcpus">0 / 32\n' in idle and "0 / 16384 MiB" in idle


def test_the_hosts_page_costs_the_same_queries_for_many_hosts(client, staff, make_host, world):
    client.force_login(staff)
    with CaptureQueriesContext(connection) as few:
        client.get("/console/hosts/")
    for n in range(10):
        make_host(f"extra{n}")
    with CaptureQueriesContext(connection) as many:
        client.get("/console/hosts/")
    assert len(many) == len(few)


def test_staff_put_a_host_into_maintenance_and_back_with_the_reason_in_the_audit_log(client, staff, world):
    host = world["busy"]
    client.force_login(staff)
    answer = client.post(f"/console/hosts/{host.pk}/maintenance/set/", {"reason": "RAM replacement"}, follow=True)
    assert "Host hv1 is in maintenance: no new VM goes there." in answer.content.decode()
    assert 'data-host="hv1" data-status="maintenance"' in answer.content.decode()
    host.refresh_from_db()
    assert host.maintenance is True
    entry = AuditEntry.objects.get(action="compute.host.maintenance_set")
    assert entry.actor == staff and entry.object_id == str(host.pk)
    assert entry.details == {"maintenance": True, "reason": "RAM replacement"}
    # The scheduler places nothing there any more.
    assert host.pk not in [room.host.pk for room in scheduler._room(scheduler._candidates())]

    answer = client.post(f"/console/hosts/{host.pk}/maintenance/clear/", follow=True)
    assert "Host hv1 is back in service." in answer.content.decode()
    host.refresh_from_db()
    assert host.maintenance is False
    assert AuditEntry.objects.filter(action="compute.host.maintenance_cleared").count() == 1


def test_setting_maintenance_twice_is_refused_with_the_reason_and_audited_once(client, staff, make_host):
    host = make_host("hv1")
    client.force_login(staff)
    client.post(f"/console/hosts/{host.pk}/maintenance/set/")
    answer = client.post(f"/console/hosts/{host.pk}/maintenance/set/", follow=True)
    assert "host hv1 is already in maintenance" in answer.content.decode()
    assert AuditEntry.objects.filter(action="compute.host.maintenance_set").count() == 1


def test_maintenance_of_a_missing_host_is_the_404_page(client, staff):
    client.force_login(staff)
    answer = client.post("/console/hosts/999/maintenance/set/")
    assert answer.status_code == 404 and "<h1>Not found</h1>" in answer.content.decode()


def test_maintenance_changes_need_a_post(client, staff, make_host):
    host = make_host("hv1")
    client.force_login(staff)
    assert client.get(f"/console/hosts/{host.pk}/maintenance/set/").status_code == 405
    host.refresh_from_db()
    assert host.maintenance is False


def test_the_maintenance_service_refuses_a_researcher(owner, make_host):
    from compute.services import host_maintenance_set
    from core.errors import PermissionDenied

    host = make_host("hv1")
    with pytest.raises(PermissionDenied):
        host_maintenance_set(actor=owner, host=host, maintenance=True)
    host.refresh_from_db()
    assert host.maintenance is False


# --- networks and leases -------------------------------------------------------------------------------------


def test_networks_list_their_lease_counts(client, staff, world, networks):
    client.force_login(staff)
    page = client.get("/console/networks/").content.decode()
    private = page.split('data-network="private"')[1].split("</tr>")[0]
    assert '<td class="leases">2 / 253</td>' in private
    public = page.split('data-network="public"')[1].split("</tr>")[0]
    assert '<td class="leases">0 / 13</td>' in public


def test_a_networks_leases_say_who_holds_which_address(client, staff, owner, world, networks):
    client.force_login(staff)
    answer = client.get(f"/console/networks/{networks['private'].pk}/?held=held")
    page = answer.content.decode()
    alpha = world["vms"][0]
    assert alpha.lease.ip in page and str(alpha.uuid) in page and "climate" in page
    assert page.count('data-held="held"') == 2 and 'data-held="free"' not in page
    free = client.get(f"/console/networks/{networks['private'].pk}/?held=free").content.decode()
    assert 'data-held="held"' not in free and free.count('data-held="free"') == 50  # one page
    assert "Page 1 of 6 (251 in all)" in free


def test_a_bad_lease_filter_is_named_and_lists_nothing(client, staff, networks):
    client.force_login(staff)
    answer = client.get(f"/console/networks/{networks['private'].pk}/?held=stolen")
    assert answer.status_code == 400
    page = answer.content.decode()
    assert "Show: Select a valid choice. stolen is not one of the available choices." in page
    assert 'data-held="' not in page


def test_the_leases_page_costs_the_same_queries_for_a_page_of_held_leases(client, staff, types, world, networks):
    client.force_login(staff)
    url = f"/console/networks/{networks['private'].pk}/?held=held"
    with CaptureQueriesContext(connection) as few:
        client.get(url)
    other = UserFactory(username="other")
    project = project_create(actor=staff, name="other-project", manager=other)
    for n in range(5):
        with transaction.atomic():
            vm = world["vms"][0].__class__.objects.create(
                name=f"vm{n}",
                project=project,
                created_by=other,
                image=world["vms"][0].image,
                image_identifier=world["vms"][0].image_identifier,
                instance_type=types["t1.micro"],
                vcpus=1,
                ram_mib=512,
                root_gib=10,
                host=world["idle"],
                network="private",
                state="running",
            )
            lease_take(network_kind="private", instance=vm)
    with CaptureQueriesContext(connection) as many:
        answer = client.get(url)
    assert answer.content.decode().count('data-held="held"') == 7
    assert len(many) == len(few)


def test_a_missing_network_is_the_404_page(client, staff):
    client.force_login(staff)
    assert client.get("/console/networks/4242/").status_code == 404


# --- instance types ----------------------------------------------------------------------------------------


def test_staff_add_an_instance_type_and_it_is_audited(client, staff, types):
    client.force_login(staff)
    answer = client.post(
        "/console/instance-types/new/",
        {"new-name": "g1.huge", "new-vcpus": "16", "new-ram_mib": "65536", "new-swap_mib": "0", "new-root_gib": "40"},
        follow=True,
    )
    assert "Instance type g1.huge is offered." in answer.content.decode()
    itype = InstanceType.objects.get(name="g1.huge")
    assert (itype.vcpus, itype.ram_mib, itype.root_gib, itype.is_active) == (16, 65536, 40, True)
    assert AuditEntry.objects.filter(action="compute.instance_type.created", object_id=str(itype.pk)).exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"new-name": "Bad Name!"}, "is not a valid instance type name"),
        ({"new-name": "m1.small"}, "an instance type named m1.small exists already"),
        ({"new-vcpus": "0"}, "Ensure this value is greater than or equal to 1."),
        ({"new-ram_mib": "lots"}, "Enter a whole number."),
        ({"new-ram_mib": "99999999999"}, "Ensure this value is less than or equal to"),
    ],
)
def test_a_bad_new_instance_type_is_refused_clearly_and_nothing_changes(client, staff, types, fields, message):
    client.force_login(staff)
    before = InstanceType.objects.count()
    audited = AuditEntry.objects.count()
    data = {"new-name": "g1.huge", "new-vcpus": "2", "new-ram_mib": "2048", "new-swap_mib": "0", "new-root_gib": "10"}
    answer = client.post("/console/instance-types/new/", {**data, **fields})
    assert answer.status_code == 400
    assert message in answer.content.decode()
    assert InstanceType.objects.count() == before
    assert AuditEntry.objects.count() == audited


def _type_form(itype: InstanceType, **changes) -> dict[str, str]:
    values = {
        "name": itype.name,
        "vcpus": itype.vcpus,
        "ram_mib": itype.ram_mib,
        "swap_mib": itype.swap_mib,
        "root_gib": itype.root_gib,
        "is_default": itype.is_default,
        "is_active": itype.is_active,
        **changes,
    }
    return {f"type-{itype.pk}-{k}": ("on" if v is True else str(v)) for k, v in values.items() if v is not False}


def test_staff_disable_an_instance_type_and_new_requests_no_longer_see_it(client, staff, types):
    itype = types["c1.xlarge"]
    client.force_login(staff)
    answer = client.post(f"/console/instance-types/{itype.name}/", _type_form(itype, is_active=False), follow=True)
    assert "Instance type c1.xlarge is changed (new requests only)." in answer.content.decode()
    itype.refresh_from_db()
    assert itype.is_active is False
    entry = AuditEntry.objects.get(action="compute.instance_type.updated", object_id=str(itype.pk))
    assert entry.details == {"changes": {"is_active": [True, False]}}
    from compute.selectors import instance_type_list

    assert itype not in instance_type_list()


def test_staff_edit_an_instance_types_size(client, staff, types):
    itype = types["m1.medium"]
    client.force_login(staff)
    client.post(f"/console/instance-types/{itype.name}/", _type_form(itype, ram_mib=4096))
    itype.refresh_from_db()
    assert itype.ram_mib == 4096


def test_disabling_the_default_type_is_refused_with_the_services_reason(client, staff, types):
    itype = types["m1.small"]
    client.force_login(staff)
    answer = client.post(f"/console/instance-types/{itype.name}/", _type_form(itype, is_active=False))
    assert answer.status_code == 400
    assert "m1.small is the default instance type" in answer.content.decode()
    itype.refresh_from_db()
    assert itype.is_active is True


def test_retiring_a_used_type_disables_it_and_an_unused_one_is_deleted(client, staff, types, instance_on):
    instance_on(None, types["m1.large"], state="pending")
    client.force_login(staff)
    answer = client.post("/console/instance-types/m1.large/retire/", follow=True)
    assert "Instance type m1.large is no longer offered" in answer.content.decode()
    assert InstanceType.objects.get(name="m1.large").is_active is False
    answer = client.post("/console/instance-types/c1.medium/retire/", follow=True)
    assert "Instance type c1.medium is deleted" in answer.content.decode()
    assert not InstanceType.objects.filter(name="c1.medium").exists()


def test_editing_a_missing_instance_type_is_the_404_page(client, staff, types):
    client.force_login(staff)
    assert client.post("/console/instance-types/nope/", {}).status_code == 404


# --- every instance and volume -----------------------------------------------------------------------------


def test_every_instance_of_the_site_is_listed_with_its_project_owner_host_and_address(client, staff, world):
    client.force_login(staff)
    page = client.get("/console/instances/").content.decode()
    for vm in world["vms"]:
        assert f'data-instance="{vm.uuid}"' in page
    alpha = world["vms"][0]
    row = page.split(f'data-instance="{alpha.uuid}"')[1].split("</tr>")[0]
    assert "climate" in row and "hv1" in row and alpha.lease.ip in row and "Ubuntu 24.04 LTS" in row


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("state=running", {"alpha"}),
        ("state=terminated", {"gone"}),
        ("host=hv1&state=stopped", {"beta"}),
        ("host=hv2", set()),
        ("project=CLIMATE", {"alpha", "beta", "gone"}),
        ("project=other", set()),
        ("image=Ubuntu", {"alpha", "beta", "gone"}),
        ("image=Debian", set()),
    ],
)
def test_the_instance_filters_narrow_the_list(client, staff, world, query, names):
    client.force_login(staff)
    answer = client.get(f"/console/instances/?{query}")
    assert answer.status_code == 200
    assert {vm.name for vm in answer.context["page"].object_list} == names


def test_the_owner_filter_finds_the_instances_a_user_made(client, staff, owner, world):
    world["vms"][0].__class__.objects.filter(name="alpha").update(created_by=owner)
    client.force_login(staff)
    answer = client.get("/console/instances/?owner=owner")
    assert {vm.name for vm in answer.context["page"].object_list} == {"alpha"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("state=flying", "State: Select a valid choice. flying is not one of the available choices."),
        ("project=" + "x" * 101, "Project: Ensure this value has at most 100 characters (it has 101)."),
    ],
)
def test_a_bad_instance_filter_is_named_and_lists_nothing(client, staff, world, query, message):
    client.force_login(staff)
    answer = client.get(f"/console/instances/?{query}")
    assert answer.status_code == 400
    assert message in answer.content.decode()
    assert list(answer.context["page"].object_list) == []


def test_the_instance_list_costs_the_same_queries_for_a_full_page(client, staff, types, world, instance_on):
    client.force_login(staff)
    with CaptureQueriesContext(connection) as few:
        client.get("/console/instances/")
    for n in range(60):
        with transaction.atomic():
            vm = instance_on(world["idle"], types["t1.micro"], name=f"many{n}")
            if n < 20:
                lease_take(network_kind="local", instance=vm)
    with CaptureQueriesContext(connection) as many:
        answer = client.get("/console/instances/")
    assert len(answer.context["page"].object_list) == 50
    assert "Page 1 of 2 (63 in all)" in answer.content.decode()
    assert len(many) == len(few)


def test_every_volume_of_the_site_is_listed_and_filtered(client, staff, owner, project):
    other = project_create(actor=staff, name="physics", manager=UserFactory(username="phil"))
    _volume(project, "results", owner=owner)
    _volume(project, "scratch", state="error", owner=owner)
    _volume(other, "detector", state="in-use")
    client.force_login(staff)

    def names(query: str) -> set[str]:
        answer = client.get(f"/console/volumes/?{query}")
        assert answer.status_code == 200
        return {v.name for v in answer.context["page"].object_list}

    assert names("") == {"results", "scratch", "detector"}
    assert names("project=physics") == {"detector"}
    assert names("owner=owner") == {"results", "scratch"}
    assert names("state=error") == {"scratch"}
    assert names("kind=static") == set()
    bad = client.get("/console/volumes/?kind=floppy")
    assert bad.status_code == 400 and "Kind: Select a valid choice." in bad.content.decode()


def test_the_volume_list_costs_the_same_queries_for_a_full_page(client, staff, owner, project):
    _volume(project, "first", owner=owner)
    client.force_login(staff)
    with CaptureQueriesContext(connection) as few:
        client.get("/console/volumes/")
    for n in range(55):
        _volume(project, f"v{n}", owner=owner)
    with CaptureQueriesContext(connection) as many:
        answer = client.get("/console/volumes/")
    assert len(answer.context["page"].object_list) == 50
    assert len(many) == len(few)


def test_a_page_number_past_the_end_shows_the_last_page(client, staff, world):
    client.force_login(staff)
    answer = client.get("/console/instances/?page=999")
    assert answer.status_code == 200 and len(answer.context["page"].object_list) == 3


def test_hosts_are_not_changed_by_a_get_of_the_list(client, staff, world):
    client.force_login(staff)
    client.get("/console/hosts/")
    assert not Host.objects.filter(maintenance=True).exists()


# --- the permission matrix of every console URL -------------------------------------------------------------


def _console_urls(host: Host, network, project) -> list[tuple[str, str]]:
    return [
        ("get", "/console/"),
        ("get", "/console/hosts/"),
        ("post", f"/console/hosts/{host.pk}/maintenance/set/"),
        ("post", f"/console/hosts/{host.pk}/maintenance/clear/"),
        ("get", "/console/networks/"),
        ("get", f"/console/networks/{network.pk}/"),
        ("get", "/console/instance-types/"),
        ("post", "/console/instance-types/new/"),
        ("post", "/console/instance-types/m1.small/"),
        ("post", "/console/instance-types/c1.medium/retire/"),
        ("get", "/console/instances/"),
        ("get", "/console/volumes/"),
        ("get", "/console/audit/"),
        ("get", "/accounts/console/quotas/"),
        ("get", f"/accounts/console/quotas/{project.pk}/"),
        ("post", f"/accounts/console/quotas/{project.pk}/"),
        ("get", "/accounts/console/registrations/"),
    ]


@pytest.mark.parametrize("role", ["anonymous", "owner", "member", "outsider"])
def test_no_console_url_answers_anyone_but_staff_and_nothing_changes(
    client, role, owner, member, outsider, project, types, networks, make_host
):
    host = make_host("hv1")
    users = {"owner": owner, "member": member, "outsider": outsider}
    if role != "anonymous":
        client.force_login(users[role])
    audited = AuditEntry.objects.count()
    for method, url in _console_urls(host, networks["private"], project):
        answer = getattr(client, method)(url, {"name": "x", "vcpus": "1"} if method == "post" else None)
        if role == "anonymous":
            assert answer.status_code == 302 and answer["Location"].startswith("/accounts/login/?next="), url
        else:
            assert answer.status_code == 403, url
            assert "<h1>Not allowed</h1>" in answer.content.decode(), url
    assert AuditEntry.objects.count() == audited
    assert InstanceType.objects.filter(name="c1.medium").exists()
    host.refresh_from_db()
    assert host.maintenance is False


def test_staff_are_answered_on_every_console_url(client, staff, project, types, networks, make_host):
    host = make_host("hv1")
    client.force_login(staff)
    for method, url in _console_urls(host, networks["private"], project):
        if method == "get":
            assert client.get(url, follow=True).status_code == 200, url


def test_the_networks_and_instance_types_pages_cost_the_same_queries_however_many_rows(
    client, staff, types, networks, instance_on, make_host
):
    from compute.services import instance_type_create

    client.force_login(staff)
    with CaptureQueriesContext(connection) as few_networks:
        client.get("/console/networks/")
    with CaptureQueriesContext(connection) as few_types:
        client.get("/console/instance-types/")
    host = make_host("hv1")
    for n in range(3):
        instance_type_create(actor=staff, name=f"x{n}.big", vcpus=2, ram_mib=2048)
        with transaction.atomic():
            lease_take(network_kind="private", instance=instance_on(host, types["t1.micro"], name=f"vm{n}"))
    with CaptureQueriesContext(connection) as many_networks:
        networks_page = client.get("/console/networks/").content.decode()
    with CaptureQueriesContext(connection) as many_types:
        types_page = client.get("/console/instance-types/").content.decode()
    assert '<td class="leases">3 / 253</td>' in networks_page
    assert types_page.count('data-type="') == 10
    assert len(many_networks) == len(few_networks)
    assert len(many_types) == len(few_types)
