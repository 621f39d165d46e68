"""The nftables adapter against a real ``nft`` in a network namespace of the test's own: our table replaced as a
whole, the site's other tables untouched, what it holds read back; and a VM's firewall, with packets: a port its
rules do not open is dropped, a user's rule opens it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from compute import access, firewalls, packetfilter
from compute.models import Lease
from compute.services import instance_request
from tests.compute.netns import NETNS, plain_netns, veth

pytestmark = [*NETNS, pytest.mark.skipif(sys.platform != "linux", reason="network namespaces are Linux's")]

SITE_TABLE = (
    "add table inet site; add chain inet site input { type filter hook input priority 0; policy accept; }; "
    "add rule inet site input tcp dport 2222 drop"
)


@pytest.fixture
def front(settings):
    """A namespace standing for the front end, whose nft the adapter drives."""
    with plain_netns() as netns:
        settings.NFT_COMMAND = f"ip netns exec {netns.name} nft"
        yield netns


def test_applying_replaces_our_table_and_leaves_the_sites_own_rules_alone(front):
    front.run(["nft", SITE_TABLE])
    first = packetfilter.Dnat(front_address="192.0.2.10", front_port=15022, to_address="172.16.0.5", to_port=22)
    second = packetfilter.Dnat(front_address="192.0.2.10", front_port=15080, to_address="172.16.0.5", to_port=80)
    packetfilter.ruleset_apply(dnat=[first, second])
    packetfilter.ruleset_apply(dnat=[second])  # the whole table again: the first rule goes
    assert [(r.front_port, r.to_address, r.to_port) for r in packetfilter.dnat_rules()] == [(15080, "172.16.0.5", 80)]
    assert "tcp dport 2222 drop" in front.run(["nft", "list", "table", "inet", "site"]).stdout
    packetfilter.table_remove()
    packetfilter.table_remove()  # idempotent
    assert packetfilter.dnat_rules() == []
    assert "tcp dport 2222 drop" in front.run(["nft", "list", "table", "inet", "site"]).stdout


def test_a_rule_nft_refuses_changes_nothing_and_says_why(front):
    good = packetfilter.Dnat(front_address="192.0.2.10", front_port=15022, to_address="172.16.0.5", to_port=22)
    packetfilter.ruleset_apply(dnat=[good])
    with pytest.raises(packetfilter.PacketFilterError, match="cannot translate protocol"):
        packetfilter.ruleset_apply(
            dnat=[
                packetfilter.Dnat(
                    front_address="192.0.2.10",
                    front_port=1,
                    to_address="172.16.0.5",
                    to_port=1,
                    protocol="sctp; flush ruleset",
                )
            ]
        )
    with pytest.raises(ValueError):
        packetfilter.ruleset_apply(
            dnat=[
                packetfilter.Dnat(
                    front_address="192.0.2.10; flush ruleset", front_port=1, to_address="172.16.0.5", to_port=1
                )
            ]
        )
    assert packetfilter.dnat_rules() == [good]


SERVER = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(5); print('listening', flush=True)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hello'); c.close()\n"
)
CLIENT = (
    "import socket, sys\n"
    "try:\n"
    "    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2); print(c.recv(5).decode())\n"
    "except OSError as exc:\n"
    "    print('failed', exc)\n"
)


@pytest.mark.django_db
def test_a_port_the_vms_rules_do_not_open_is_dropped_until_a_user_rule_opens_it(
    front, owner, project, ported_image, types, networks, make_host, frontend_syncs
):
    make_host("h1")
    vm = instance_request(
        actor=owner,
        project=project,
        image=ported_image,
        instance_type=types["t1.micro"],
        network="private",
        ssh_keys=[],
        name="db",
    )
    lease = Lease.objects.get(instance=vm)
    # The VM (a namespace holding its lease's address behind the front end) and a client on another network.
    with plain_netns() as guest, plain_netns() as client:
        veth(front, "10.10.0.1/24", guest, f"{lease.ip}/24", gateway_in_b="10.10.0.1")
        veth(front, "198.18.0.1/24", client, "198.18.0.2/24", gateway_in_b="198.18.0.1")
        front.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        server = subprocess.Popen(
            [*guest.prefix, sys.executable, "-c", SERVER, "8080"], stdout=subprocess.PIPE, text=True
        )
        server_ssh = subprocess.Popen(
            [*guest.prefix, sys.executable, "-c", SERVER, "22"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout.readline().strip() == "listening"
            assert server_ssh.stdout.readline().strip() == "listening"

            def connect(port: int) -> str:
                return client.run([sys.executable, "-c", CLIENT, lease.ip, str(port)]).stdout.strip()

            assert connect(8080) == "hello"  # no firewall applied yet: the path works
            access.frontend_sync()  # the image's rules: 22, 80, 5432 and icmp
            assert connect(22) == "hello"
            assert connect(8080).startswith("failed")  # dropped: the connection times out
            firewalls.firewall_rule_add(actor=owner, instance=vm, protocol="tcp", port=8080, source="198.18.0.0/24")
            access.frontend_sync()
            assert connect(8080) == "hello"
        finally:
            for process in (server, server_ssh):
                process.kill()
                process.wait()
