"""Port translation and firewalls in the database and the API: which VMs get front-end ports and which ports, when
they are freed, what the API shows; who may read and change a VM's firewall, and the input refused."""

from __future__ import annotations

import datetime as dt

import pytest

from compute import access
from compute.models import FirewallRule, Instance, PortTranslation
from compute.services import instance_request, instance_terminate
from core.errors import ApplicationError, Conflict
from tests.marketplace.conftest import T0

pytestmark = pytest.mark.django_db

# The real function, taken before the autouse ``frontend_syncs`` fixture replaces it for every test.
ENQUEUE_FRONTEND_SYNC = access.enqueue_frontend_sync


@pytest.fixture
def front_end(settings):
    settings.PORT_TRANSLATION_HOST = "front.example.org"
    settings.PORT_TRANSLATION_ADDRESS = "192.0.2.10"
    settings.PORT_TRANSLATION_PORTS = [22, 80]
    settings.PORT_TRANSLATION_RANGE = (15000, 17000)
    return settings


@pytest.fixture
def request_vm(owner, project, ported_image, types, networks, make_host):
    make_host("h1", vcpus=64, ram_mib=65536)

    def ask(network: str = "local", name: str = "web", image=ported_image):
        return instance_request(
            actor=owner,
            project=project,
            image=image,
            instance_type=types["t1.micro"],
            network=network,
            ssh_keys=[],
            name=name,
        )

    return ask


def test_a_vm_on_local_gets_a_front_end_port_for_each_inbound_port_the_site_translates(front_end, request_vm):
    vm = request_vm()
    rows = {row.guest_port: row for row in PortTranslation.objects.filter(instance=vm)}
    assert set(rows) == {22, 80}  # the image also serves 5432, which the site does not translate
    assert {rows[22].service, rows[80].service} == {"ssh", "http"}
    assert all(row.front_address == "192.0.2.10" and 15000 <= row.front_port <= 17000 for row in rows.values())
    links = access.access_links(vm)
    assert links == [
        {
            "service": "ssh",
            "host": "front.example.org",
            "port": rows[22].front_port,
            "command": f"ssh -p {rows[22].front_port} root@front.example.org",
        },
        {
            "service": "http",
            "host": "front.example.org",
            "port": rows[80].front_port,
            "url": f"http://front.example.org:{rows[80].front_port}/",
        },
    ]


def test_vms_on_private_or_public_and_images_without_inbound_ports_get_no_front_end_port(
    front_end, request_vm, staff, project, owner, entry_for
):
    from accounts.quotas import quota_set
    from marketplace import services as marketplace_services

    # A newer entry of the creator for the same image names no inbound port: the newest entry is what counts.
    newer = entry_for("owner", at=T0 + dt.timedelta(days=1))
    image = marketplace_services.entry_upload(raw=newer, uploader=owner).image
    quota_set(actor=staff, project=project, limits={"public_ips": 5})
    request_vm(network="private", name="a")
    request_vm(network="public", name="b")
    request_vm(network="local", name="c", image=image)  # the Ubuntu entry says no inbound port
    assert not PortTranslation.objects.exists()


def test_port_translation_is_off_without_a_front_end_host(settings, request_vm):
    settings.PORT_TRANSLATION_HOST = ""
    vm = request_vm()
    assert not PortTranslation.objects.exists() and access.access_links(vm) == []


def test_a_request_when_every_front_end_port_is_taken_is_refused_and_makes_nothing(front_end, request_vm):
    front_end.PORT_TRANSLATION_RANGE = (15000, 15002)
    request_vm(name="first")
    with pytest.raises(Conflict) as refused:
        request_vm(name="second")  # one port left, two wanted
    assert refused.value.code == "no-free-port"
    assert PortTranslation.objects.count() == 2
    assert list(Instance.objects.values_list("name", flat=True)) == ["first"]


def test_terminating_a_vm_frees_its_front_end_ports_and_asks_the_front_end_to_drop_them(
    front_end, request_vm, owner, frontend_syncs, django_capture_on_commit_callbacks
):
    vm = request_vm()
    port = PortTranslation.objects.filter(instance=vm).first().front_port
    with django_capture_on_commit_callbacks(execute=True):
        ended = instance_terminate(actor=owner, instance=vm)
    assert ended.state == "terminated" and not PortTranslation.objects.exists()
    assert frontend_syncs == ["frontend"]
    # The port is free again: the next VM may get it.
    front_end.PORT_TRANSLATION_RANGE = (port, port + 1)
    again = request_vm(name="again")
    assert port in set(PortTranslation.objects.filter(instance=again).values_list("front_port", flat=True))


def test_a_vm_starts_with_its_images_firewall_rules(request_vm):
    vm = request_vm(network="private")
    assert sorted((r.protocol, r.port, r.source, r.origin) for r in FirewallRule.objects.filter(instance=vm)) == [
        ("icmp", None, "0.0.0.0/0", "image"),
        ("tcp", 22, "0.0.0.0/0", "image"),
        ("tcp", 80, "0.0.0.0/0", "image"),
        ("tcp", 5432, "0.0.0.0/0", "image"),
    ]


# The API ---------------------------------------------------------------------------------------------------------

ROLES = ["anonymous", "outsider", "member", "owner", "staff"]


@pytest.fixture
def world(owner, member, outsider, staff, request_vm):
    vm = request_vm(network="private")
    rule = FirewallRule.objects.filter(instance=vm, port=22).get()
    return {"users": {"owner": owner, "member": member, "outsider": outsider, "staff": staff}, "vm": vm, "rule": rule}


MATRIX = [
    (
        "get",
        "/api/v1/compute/instances/{vm}/firewall/",
        {"anonymous": 401, "outsider": 404, "staff": 404, "member": 200, "owner": 200},
    ),
    (
        "post",
        "/api/v1/compute/instances/{vm}/firewall/",
        {"anonymous": 401, "outsider": 404, "staff": 404, "member": 201},
    ),
    (
        "delete",
        "/api/v1/compute/instances/{vm}/firewall/{rule}/",
        {"anonymous": 401, "outsider": 404, "staff": 404, "owner": 204},
    ),
]


@pytest.mark.parametrize(("method", "template", "expected"), MATRIX)
def test_firewall_permission_matrix(api, world, method, template, expected):
    for role, status in expected.items():
        client = api
        client.force_authenticate(user=None if role == "anonymous" else world["users"][role])
        url = template.format(vm=world["vm"].uuid, rule=world["rule"].pk)
        body = {"protocol": "tcp", "port": 8080, "source": "198.51.100.0/24"} if method == "post" else None
        response = getattr(client, method)(url, body, format="json") if body else getattr(client, method)(url)
        assert response.status_code == status, (role, response.content)


def test_a_member_adds_a_rule_and_the_front_end_is_asked_to_apply_it(
    api, world, frontend_syncs, django_capture_on_commit_callbacks
):
    api.force_authenticate(user=world["users"]["member"])
    url = f"/api/v1/compute/instances/{world['vm'].uuid}/firewall/"
    with django_capture_on_commit_callbacks(execute=True):
        made = api.post(url, {"protocol": "udp", "port": 5000, "source": "198.51.100.0/24"}, format="json")
    assert made.status_code == 201, made.content
    assert (made.json()["protocol"], made.json()["port"], made.json()["origin"]) == ("udp", 5000, "user")
    assert frontend_syncs == ["frontend"]
    listed = api.get(url).json()
    assert ("udp", 5000, "198.51.100.0/24") in [(r["protocol"], r["port"], r["source"]) for r in listed]
    again = api.post(url, {"protocol": "udp", "port": 5000, "source": "198.51.100.0/24"}, format="json")
    assert (again.status_code, again.json()["code"]) == (409, "firewall-rule-exists")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"protocol": "tcp", "port": 25}, "firewall-port"),  # the site does not let users open smtp
        ({"protocol": "tcp", "port": 0}, "firewall-port"),
        ({"protocol": "tcp", "port": 70000}, "firewall-port"),
        ({"protocol": "tcp"}, "firewall-port"),
        ({"protocol": "icmp", "port": 22}, "firewall-port"),
        ({"protocol": "tcp", "port": 8080, "source": "10.0.0.1/8"}, "firewall-source"),  # host bits set
        ({"protocol": "tcp", "port": 8080, "source": "0.0.0.0/0; flush ruleset"}, "firewall-source"),
        ({"protocol": "tcp", "port": 8080, "source": "::/0"}, "firewall-source"),
    ],
)
def test_bad_firewall_rules_are_refused_with_a_code_and_change_nothing(api, world, body, code):
    api.force_authenticate(user=world["users"]["owner"])
    before = FirewallRule.objects.count()
    response = api.post(f"/api/v1/compute/instances/{world['vm'].uuid}/firewall/", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] in (code, "invalid", "max_length")
    assert FirewallRule.objects.count() == before


def test_a_rule_of_another_instance_cannot_be_deleted_through_mine(api, world, request_vm):
    theirs = request_vm(network="private", name="other")
    rule = FirewallRule.objects.filter(instance=theirs).first()
    api.force_authenticate(user=world["users"]["owner"])
    response = api.delete(f"/api/v1/compute/instances/{world['vm'].uuid}/firewall/{rule.pk}/")
    assert response.status_code == 404
    assert FirewallRule.objects.filter(pk=rule.pk).exists()


def test_firewall_rule_service_refuses_an_unknown_protocol(world):
    from compute import firewalls

    with pytest.raises(ApplicationError) as refused:
        firewalls.firewall_rule_add(
            actor=world["users"]["owner"], instance=world["vm"], protocol="gre", port=None, source=""
        )
    assert refused.value.code == "firewall-protocol"


def test_a_site_that_makes_its_own_bridges_gets_no_libvirt_network(settings, make_host, request_vm):
    from compute import hypervisor
    from compute.models import Host, Lease
    from compute.networks import host_network_ensure, host_networks_repair

    settings.COMPUTE_MANAGE_NETWORKS = False
    vm = request_vm(network="private")
    host = Host.objects.get(pk=vm.host_id)
    host.uri = "test:///default"
    host_network_ensure(host=host, lease=Lease.objects.select_related("network").get(instance=vm))
    assert host_networks_repair(host) == []
    assert "alto-private" not in hypervisor.networks("test:///default")


def test_a_site_without_a_front_end_sends_no_rule_syncs_to_pile_up_unconsumed(settings, monkeypatch):
    sent: list[tuple] = []
    monkeypatch.setattr(access.current_app, "send_task", lambda *args, **kwargs: sent.append((args, kwargs)))
    settings.FRONTEND_QUEUE = ""
    ENQUEUE_FRONTEND_SYNC()
    assert sent == []
    settings.FRONTEND_QUEUE = "frontend"
    ENQUEUE_FRONTEND_SYNC()
    assert sent == [((access.FRONTEND_SYNC,), {"queue": "frontend"})]


def test_the_api_shows_a_public_vm_reached_at_its_own_address_on_the_ports_its_firewall_opens(
    front_end, request_vm, staff, project, owner, api_as
):
    from accounts.quotas import quota_set

    quota_set(actor=staff, project=project, limits={"public_ips": 5})
    public = request_vm(network="public", name="pub")
    private = request_vm(network="private", name="priv")
    ip = public.lease.ip
    client = api_as(owner)
    shown = client.get(f"/api/v1/compute/instances/{public.uuid}/").json()["access"]
    # the image serves 22, 80 and 5432; only the well-known services become links, on their own ports
    assert shown == [
        {"service": "ssh", "host": ip, "port": 22, "command": f"ssh root@{ip}"},
        {"service": "http", "host": ip, "port": 80, "url": f"http://{ip}/"},
    ]
    assert client.get(f"/api/v1/compute/instances/{private.uuid}/").json()["access"] == []
