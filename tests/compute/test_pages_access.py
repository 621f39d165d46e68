"""How the portal shows the way into a VM and its firewall: the dashboard row and the VM page link a VM on ``local``
through its translated front-end ports (ssh as a command to copy), a VM on ``public`` at its own address, and a VM on
``private`` not at all; the VM page lists the firewall rules, adds and deletes them through the services the API
calls (which ask the front end to apply them), shows refusals in words and changes nothing, and is its project's
members' only."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.quotas import quota_set
from compute.models import FirewallRule, Instance, PortTranslation
from compute.services import instance_request
from core.models import AuditEntry

pytestmark = pytest.mark.django_db

FRONT = "front.example.org"


@pytest.fixture
def front_end(settings):
    settings.PORT_TRANSLATION_HOST = FRONT
    settings.PORT_TRANSLATION_ADDRESS = "192.0.2.10"
    settings.PORT_TRANSLATION_PORTS = [22, 80]
    settings.PORT_TRANSLATION_RANGE = (15000, 17000)
    settings.FIREWALL_USER_PORTS = [(22, 22), (80, 80), (443, 443), (1024, 65535)]
    return settings


@pytest.fixture
def request_vm(front_end, owner, staff, project, ported_image, types, networks, make_host):
    """``request_vm(network, name)``: a VM requested through ``instance_request`` from the image that serves ssh, http
    and 5432 (so it has its translations, lease and firewall rules), then marked running as a worker would."""
    make_host("h1", vcpus=64, ram_mib=65536)
    quota_set(actor=staff, project=project, limits={"public_ips": 5, "instances": 50, "vcpus": 100, "ram_mib": 65536})

    def ask(network: str = "local", name: str = "web", *, state: str = "running") -> Instance:
        vm = instance_request(
            actor=owner,
            project=project,
            image=ported_image,
            instance_type=types["t1.micro"],
            network=network,
            ssh_keys=[],
            name=name,
        )
        Instance.objects.filter(pk=vm.pk).update(state=state)
        return Instance.objects.select_related("lease").get(pk=vm.pk)

    return ask


def _front_port(vm: Instance, guest_port: int) -> int:
    return PortTranslation.objects.get(instance=vm, guest_port=guest_port).front_port


def _row(page: str, vm: Instance) -> str:
    """The address cell of ``vm``'s row on the dashboard (where its links are)."""
    row = page.split(f'data-instance="{vm.uuid}"')[1].split("</tr>")[0]
    return row.split('data-role="address">')[1].split("</td>")[0]


def _reach_line(page: str) -> str:
    return page.split('id="instance-reach">')[1].split("</p>")[0]


def _hrefs(html: str) -> list[str]:
    return re.findall(r'href="([^"]*)"', html)


# --- Links ------------------------------------------------------------------------------------------------------


def test_a_vm_on_local_is_shown_with_its_front_end_ssh_command_and_web_link_and_not_its_own_address(
    client, owner, request_vm
):
    vm = request_vm("local")
    ssh, http = _front_port(vm, 22), _front_port(vm, 80)
    client.force_login(owner)
    row = _row(client.get("/").content.decode(), vm)
    page = client.get(f"/instances/{vm.uuid}/").content.decode()
    for shown in (row, _reach_line(page)):
        assert f'<code data-role="command">ssh -p {ssh} root@{FRONT}</code>' in shown
        assert f'href="http://{FRONT}:{http}/"' in shown
        # The lease's address is on an inner network: no link leads to it (5432 is not translated, so not linked).
        assert not [href for href in _hrefs(shown) if vm.lease.ip in href or href.startswith("ssh://")]
        assert "5432" not in shown
    assert f'<span class="mono">{vm.lease.ip}</span>' in row  # the address is still told, as text


def test_a_translated_port_of_another_service_is_shown_as_the_address_to_use(client, owner, request_vm, front_end):
    front_end.PORT_TRANSLATION_PORTS = [22, 80, 5432]
    vm = request_vm("local")
    client.force_login(owner)
    line = _reach_line(client.get(f"/instances/{vm.uuid}/").content.decode())
    assert f'5432 <span class="mono">{FRONT}:{_front_port(vm, 5432)}</span>' in line
    assert len(_hrefs(line)) == 1  # http only


def test_a_vm_on_public_is_linked_at_its_own_address_for_what_its_firewall_lets_in(client, owner, request_vm):
    vm = request_vm("public")
    ip = vm.lease.ip
    assert ip.startswith("203.0.113.")
    client.force_login(owner)
    row = _row(client.get("/").content.decode(), vm)
    page = client.get(f"/instances/{vm.uuid}/").content.decode()
    for shown in (row, _reach_line(page)):
        assert f'<code data-role="command">ssh root@{ip}</code>' in shown
        assert _hrefs(shown) == [f"http://{ip}/"]
        assert FRONT not in shown
    # An https rule added on the page gives an https link; deleting the http rule takes its link away.
    client.post(f"/instances/{vm.uuid}/firewall/", {"protocol": "tcp", "port": "443", "source": "0.0.0.0/0"})
    http_rule = FirewallRule.objects.get(instance=vm, protocol="tcp", port=80)
    client.post(f"/instances/{vm.uuid}/firewall/{http_rule.pk}/delete/")
    line = _reach_line(client.get(f"/instances/{vm.uuid}/").content.decode())
    assert _hrefs(line) == [f"https://{ip}/"]


def test_a_vm_on_public_whose_firewall_lets_nothing_in_gets_no_link_but_a_hint(client, owner, request_vm):
    vm = request_vm("public")
    FirewallRule.objects.filter(instance=vm).delete()
    client.force_login(owner)
    row = _row(client.get("/").content.decode(), vm)
    line = _reach_line(client.get(f"/instances/{vm.uuid}/").content.decode())
    assert 'data-role="command"' not in row and not _hrefs(row)
    assert "Its firewall lets no ssh or web connection in" in line and not _hrefs(line)


def test_a_vm_on_private_is_given_no_link(client, owner, request_vm):
    vm = request_vm("private")
    client.force_login(owner)
    row = _row(client.get("/").content.decode(), vm)
    line = _reach_line(client.get(f"/instances/{vm.uuid}/").content.decode())
    assert vm.lease.ip in row and not _hrefs(row) and 'data-role="command"' not in row
    assert "It is on the private network: it is not reachable from outside." in line and not _hrefs(line)


def test_a_vm_on_local_without_port_translation_is_given_no_link(client, owner, request_vm, settings):
    settings.PORT_TRANSLATION_HOST = ""
    vm = request_vm("local")
    client.force_login(owner)
    row = _row(client.get("/").content.decode(), vm)
    line = _reach_line(client.get(f"/instances/{vm.uuid}/").content.decode())
    assert 'data-role="command"' not in row and not _hrefs(row)
    assert "No port of it is translated on the front end" in line


def test_links_appear_only_once_the_vm_runs(client, owner, request_vm):
    vm = request_vm("local", state="booting")
    client.force_login(owner)
    assert 'data-role="command"' not in client.get("/").content.decode()
    assert 'id="instance-reach"' not in client.get(f"/instances/{vm.uuid}/status/").content.decode()
    Instance.objects.filter(pk=vm.pk).update(state="running")
    status = client.get(f"/instances/{vm.uuid}/status/").content.decode()
    assert f"ssh -p {_front_port(vm, 22)} root@{FRONT}" in _reach_line(status)


# --- The firewall section -----------------------------------------------------------------------------------------


def test_the_vm_page_lists_the_images_rules_and_the_members_own(client, owner, member, request_vm):
    vm = request_vm("private")
    client.force_login(member)
    client.post(f"/instances/{vm.uuid}/firewall/", {"protocol": "udp", "port": "5000", "source": "198.51.100.0/24"})
    section = client.get(f"/instances/{vm.uuid}/").content.decode().split('id="firewall"')[1].split("</section>")[0]
    rows = re.findall(r'<tr data-rule="(\d+)">(.*?)</tr>', section, re.S)
    cells = [
        tuple(re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", html, re.S)[:4])
        for _pk, html in rows
    ]
    assert cells == [
        ("tcp", "22", "0.0.0.0/0 anywhere", "the image"),
        ("tcp", "80", "0.0.0.0/0 anywhere", "the image"),
        ("tcp", "5432", "0.0.0.0/0 anywhere", "the image"),
        ("icmp", "—", "0.0.0.0/0 anywhere", "the image"),
        ("udp", "5000", "198.51.100.0/24", "a member"),
    ]
    assert all(f'id="delete-rule-{pk}"' in section for pk, _html in rows)
    assert 'id="firewall-form"' in section


def test_a_member_adds_a_rule_on_the_page_and_the_front_end_is_asked_to_apply_it(
    client, member, request_vm, frontend_syncs, django_capture_on_commit_callbacks
):
    vm = request_vm("local")
    client.force_login(member)
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(
            f"/instances/{vm.uuid}/firewall/", {"protocol": "tcp", "port": "8080", "source": "198.51.100.0/24"}
        )
    assert answer.status_code == 302 and answer["Location"] == f"/instances/{vm.uuid}/#firewall"
    rule = FirewallRule.objects.get(instance=vm, port=8080)
    assert (rule.protocol, rule.source, rule.origin) == ("tcp", "198.51.100.0/24", "user")
    assert frontend_syncs == ["frontend"]
    entry = AuditEntry.objects.get(action="compute.firewall_rule.added")
    assert entry.actor == member
    page = client.get(answer["Location"]).content.decode()
    assert f"VM {vm.name} now lets in tcp port 8080 from 198.51.100.0/24." in page
    assert f'<tr data-rule="{rule.pk}">' in page


def test_an_icmp_rule_needs_no_port_and_an_empty_source_means_anywhere(client, owner, request_vm):
    vm = request_vm("private")
    FirewallRule.objects.filter(instance=vm, protocol="icmp").delete()
    client.force_login(owner)
    answer = client.post(f"/instances/{vm.uuid}/firewall/", {"protocol": "icmp", "port": "", "source": ""})
    assert answer.status_code == 302
    assert FirewallRule.objects.filter(instance=vm, protocol="icmp", port=None, source="0.0.0.0/0").exists()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"protocol": "tcp", "port": "25"}, "this site lets users open ports 22, 80, 443, 1024-65535 only; 25"),
        ({"protocol": "tcp", "port": "70000"}, "a tcp rule needs a port 1-65535, got 70000"),
        ({"protocol": "tcp", "port": ""}, "a tcp rule needs a port 1-65535, got None"),
        ({"protocol": "icmp", "port": "22"}, "an icmp rule has no port"),
        ({"protocol": "tcp", "port": "ssh"}, "Port: Enter a whole number."),
        ({"protocol": "tcp", "port": "9" * 5000}, "Port: Enter a whole number."),
        ({"protocol": "gre", "port": "8080"}, "Protocol: Select a valid choice."),
        ({"protocol": "tcp", "port": "8080", "source": "10.0.0.1/8"}, "is not an IPv4 network in CIDR notation"),
        ({"protocol": "tcp", "port": "8080", "source": "0.0.0.0/0; flush ruleset"}, "is not an IPv4 network"),
        ({"protocol": "tcp", "port": "8080", "source": "::/0"}, "is not an IPv4 network in CIDR notation"),
        ({"protocol": "tcp", "port": "8080", "source": "x" * 65}, "From (IPv4 CIDR): Ensure this value has at most"),
    ],
)
def test_a_bad_rule_is_refused_on_the_page_in_words_and_changes_nothing(
    client, owner, request_vm, frontend_syncs, django_capture_on_commit_callbacks, body, words
):
    vm = request_vm("local")
    before = list(FirewallRule.objects.order_by("pk").values_list("pk", "protocol", "port", "source"))
    client.force_login(owner)
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(f"/instances/{vm.uuid}/firewall/", body)
    assert answer.status_code == 400
    page = answer.content.decode()
    errors = page.split('id="firewall-errors">')[1].split("</div>")[0]
    assert words in errors.replace("&#x27;", "'"), errors
    # The page is the VM's whole page again, with what was typed kept in the form.
    assert f"<h1>VM {vm.name}</h1>" in page
    if body["port"] and len(body["port"]) < 10:
        assert f'value="{body["port"]}"' in page.split('id="firewall-form"')[1]
    assert list(FirewallRule.objects.order_by("pk").values_list("pk", "protocol", "port", "source")) == before
    assert frontend_syncs == []
    assert not AuditEntry.objects.filter(action__startswith="compute.firewall_rule").exists()


def test_a_rule_the_vm_has_already_is_refused(client, owner, request_vm):
    vm = request_vm("local")
    client.force_login(owner)
    answer = client.post(f"/instances/{vm.uuid}/firewall/", {"protocol": "tcp", "port": "22", "source": "0.0.0.0/0"})
    assert answer.status_code == 400
    assert "The rule was not added: the instance has this rule already." in answer.content.decode()
    assert FirewallRule.objects.filter(instance=vm, port=22).count() == 1


def test_a_member_deletes_a_rule_on_the_page_and_the_front_end_is_asked_to_drop_it(
    client, member, request_vm, frontend_syncs, django_capture_on_commit_callbacks
):
    vm = request_vm("local")
    rule = FirewallRule.objects.get(instance=vm, port=5432)
    client.force_login(member)
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(f"/instances/{vm.uuid}/firewall/{rule.pk}/delete/")
    assert answer.status_code == 302 and answer["Location"] == f"/instances/{vm.uuid}/#firewall"
    assert not FirewallRule.objects.filter(pk=rule.pk).exists()
    assert frontend_syncs == ["frontend"]
    assert AuditEntry.objects.filter(action="compute.firewall_rule.deleted").count() == 1
    page = client.get(answer["Location"]).content.decode()
    assert f"VM {vm.name} no longer lets in tcp port 5432 from anywhere." in page


@pytest.mark.parametrize("rule_id", ["theirs", "0", "abc", "9" * 30, "1e3"])
def test_a_rule_that_is_not_this_vms_cannot_be_deleted_through_its_page(client, owner, request_vm, rule_id):
    mine = request_vm("private", name="mine")
    theirs = request_vm("private", name="other")
    target = str(FirewallRule.objects.filter(instance=theirs).first().pk) if rule_id == "theirs" else rule_id
    before = FirewallRule.objects.count()
    client.force_login(owner)
    answer = client.post(f"/instances/{mine.uuid}/firewall/{target}/delete/", follow=True)
    assert answer.redirect_chain[-1][0] == f"/instances/{mine.uuid}/#firewall"
    assert f"The firewall of VM {mine.name} was not changed: no such firewall rule." in answer.content.decode()
    assert FirewallRule.objects.count() == before


def test_no_one_outside_the_vms_project_sees_or_changes_its_firewall(client, outsider, staff, request_vm):
    vm = request_vm("local")
    rule = FirewallRule.objects.get(instance=vm, port=22)
    before = list(FirewallRule.objects.order_by("pk").values_list("pk", flat=True))
    body = {"protocol": "tcp", "port": "8080", "source": "0.0.0.0/0"}
    for user in (outsider, staff):  # staff are not in the project either
        client.force_login(user)
        assert client.get(f"/instances/{vm.uuid}/").status_code == 404
        assert client.post(f"/instances/{vm.uuid}/firewall/", body).status_code == 404
        assert client.post(f"/instances/{vm.uuid}/firewall/{rule.pk}/delete/").status_code == 404
    assert list(FirewallRule.objects.order_by("pk").values_list("pk", flat=True)) == before


def test_an_anonymous_visitor_is_sent_to_log_in_and_changes_nothing(client, request_vm):
    vm = request_vm("local")
    rule = FirewallRule.objects.get(instance=vm, port=22)
    answer = client.post(f"/instances/{vm.uuid}/firewall/", {"protocol": "tcp", "port": "8080"})
    assert answer.status_code == 302 and answer["Location"].startswith("/accounts/login/")
    answer = client.post(f"/instances/{vm.uuid}/firewall/{rule.pk}/delete/")
    assert answer.status_code == 302 and answer["Location"].startswith("/accounts/login/")
    assert FirewallRule.objects.filter(pk=rule.pk).exists() and not FirewallRule.objects.filter(port=8080).exists()


def test_the_firewall_is_changed_by_post_only(client, owner, request_vm):
    vm = request_vm("local")
    rule = FirewallRule.objects.get(instance=vm, port=22)
    client.force_login(owner)
    assert client.get(f"/instances/{vm.uuid}/firewall/?protocol=tcp&port=8080").status_code == 405
    assert client.get(f"/instances/{vm.uuid}/firewall/{rule.pk}/delete/").status_code == 405
    assert FirewallRule.objects.filter(pk=rule.pk).exists() and not FirewallRule.objects.filter(port=8080).exists()


def test_a_terminated_vm_shows_its_rules_without_the_form_and_refuses_new_ones(client, owner, request_vm):
    vm = request_vm("private", state="terminated")
    client.force_login(owner)
    page = client.get(f"/instances/{vm.uuid}/").content.decode()
    section = page.split('id="firewall"')[1].split("</section>")[0]
    assert "<td>tcp</td>" in section and 'id="firewall-form"' not in section and "delete-rule-" not in section
    answer = client.post(f"/instances/{vm.uuid}/firewall/", {"protocol": "tcp", "port": "8080"})
    assert answer.status_code == 400
    assert f"instance {vm.name} is terminated" in answer.content.decode()
    assert not FirewallRule.objects.filter(port=8080).exists()


# --- Query counts -------------------------------------------------------------------------------------------------


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured.captured_queries)


def test_the_dashboard_reads_a_fixed_number_of_queries_however_many_vms_and_links(client, owner, request_vm):
    client.force_login(owner)
    request_vm("local", name="first")
    client.get("/")  # the session and content types are cached from here on
    few, few_part = _queries(client, "/"), _queries(client, "/dashboard/instances/")
    for n in range(3):
        for network in ("local", "public", "private"):
            request_vm(network, name=f"{network}-{n}")
    page = client.get("/").content.decode()
    assert page.count('data-role="command"') == 7  # 4 on local through the front end, 3 on public directly
    assert _queries(client, "/") == few
    assert _queries(client, "/dashboard/instances/") == few_part


def test_the_vm_page_reads_a_fixed_number_of_queries_however_many_rules(client, owner, request_vm):
    vm = request_vm("public")
    client.force_login(owner)
    url = f"/instances/{vm.uuid}/"
    client.get(url)
    few, few_status = _queries(client, url), _queries(client, f"{url}status/")
    for port in range(2000, 2010):
        FirewallRule.objects.create(instance=vm, protocol="tcp", port=port)
    FirewallRule.objects.create(instance=vm, protocol="tcp", port=443)
    assert _queries(client, url) == few
    assert _queries(client, f"{url}status/") == few_status
    assert f'href="https://{vm.lease.ip}/"' in client.get(url).content.decode()
