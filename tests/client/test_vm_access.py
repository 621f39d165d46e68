"""``alto vm show`` tells how to reach a VM on ``local``: the ssh command and the URL of its translated ports."""

from __future__ import annotations

import pytest

from compute.models import Instance, PortTranslation
from marketplace.models import Image

pytestmark = [pytest.mark.django_db(transaction=True)]


def _vm(project, itype, *, name: str, network: str) -> Instance:
    """A VM row of ``project`` (as a request leaves it) on ``network``, from an image of its own."""
    image = Image.objects.create(
        identifier=name.upper().ljust(27, "A"),
        sha1="0" * 40,
        bytes=1,
        first_endorsed="2026-01-01T00:00Z",
        updated="2026-01-01T00:00Z",
    )
    return Instance.objects.create(
        name=name,
        project=project,
        image=image,
        image_identifier=image.identifier,
        instance_type=itype,
        vcpus=itype.vcpus,
        ram_mib=itype.ram_mib,
        root_gib=itype.root_gib,
        network=network,
        state="pending",
    )


def test_alto_vm_show_prints_the_ssh_command_and_the_web_link_of_a_local_vm(
    alto, owner, project, token_of, types, networks, settings
):
    settings.PORT_TRANSLATION_HOST = "front.example.org"
    vm = _vm(project, types["t1.micro"], name="web", network="local")
    for service, guest, front in (("ssh", 22, 15022), ("http", 80, 15080)):
        PortTranslation.objects.create(
            instance=vm, service=service, guest_port=guest, front_address="192.0.2.10", front_port=front
        )
    token = token_of(owner)

    shown = alto("vm", "show", str(vm.uuid), token=token)
    assert shown.exit_code == 0, shown.stderr
    assert "ssh -p 15022 root@front.example.org" in shown.stdout
    assert "http://front.example.org:15080/" in shown.stdout
    as_json = alto("vm", "show", str(vm.uuid), "--json", token=token).json()
    assert as_json["access"] == [
        {
            "service": "ssh",
            "host": "front.example.org",
            "port": 15022,
            "command": "ssh -p 15022 root@front.example.org",
        },
        {"service": "http", "host": "front.example.org", "port": 15080, "url": "http://front.example.org:15080/"},
    ]


def test_alto_vm_firewall_lists_adds_refuses_and_deletes_rules(alto, owner, project, token_of, types, networks):
    vm = _vm(project, types["t1.micro"], name="db", network="private")
    token = token_of(owner)
    added = alto(
        "vm", "firewall", "add", str(vm.uuid), "--port", "8080", "--source", "198.51.100.0/24", "--json", token=token
    )
    assert added.exit_code == 0, added.stderr
    rule = added.json()
    assert (rule["protocol"], rule["port"], rule["source"], rule["origin"]) == ("tcp", 8080, "198.51.100.0/24", "user")
    listed = alto("vm", "firewall", "list", str(vm.uuid), token=token)
    assert "8080" in listed.stdout and "198.51.100.0/24" in listed.stdout
    refused = alto("vm", "firewall", "add", str(vm.uuid), "--port", "25", token=token)
    assert refused.exit_code == 1 and "[firewall-port]" in refused.stderr
    deleted = alto("vm", "firewall", "delete", str(vm.uuid), str(rule["id"]), token=token)
    assert deleted.exit_code == 0, deleted.stderr
    assert alto("vm", "firewall", "list", str(vm.uuid), "--json", token=token).json() == []
