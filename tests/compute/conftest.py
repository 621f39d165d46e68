"""Fixtures for the compute tests: hosts of known sizes, the instance types, the three networks, and a
real signed Marketplace image (the Marketplace tests' keys and entries)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.conf import settings

from accounts.services import ssh_key_add
from compute.models import Host, Instance, InstanceType, Network
from compute.networks import network_create
from compute.services import instance_request, instance_types_seed
from marketplace import metadata
from marketplace import services as marketplace_services
from marketplace.models import Image
from tests.compute.guest import (  # noqa: F401 - the real-guest fixtures
    guest_disk,
    hotplug_guest,
    libvirt_daemon,
    libvirt_host,
    tiny_guest,
    web_guest_disk,
)
from tests.compute.netns import netns_libvirt  # noqa: F401 - a namespace with its own libvirtd
from tests.marketplace.conftest import (  # noqa: F401 - fixtures shared with the marketplace tests
    IMAGE,
    T0,
    _signed_cache,
    entry_for,
    keyring,
    outsider,
    owner,
    registered,
    staff,
    trusted_keyring,
)
from tests.marketplace.keys import pgp_keys  # noqa: F401 - a session fixture entry_for needs
from tests.storage.conftest import (
    checksums_of,
    volume_settings,  # noqa: F401 - volumes in a directory of the test's own
)


@pytest.fixture
def make_host(db) -> Callable[..., Host]:
    """``make_host("h1", vcpus=8, ram_mib=16384, **fields)``: a host row of that size (no libvirt)."""

    def make(name: str, *, vcpus: int = 8, ram_mib: int = 16384, **fields) -> Host:
        return Host.objects.create(name=name, uri=f"test:///{name}", vcpus=vcpus, ram_mib=ram_mib, **fields)

    return make


@pytest.fixture
def types(db, staff) -> dict[str, InstanceType]:  # noqa: F811 - the fixtures imported above
    instance_types_seed(actor=staff)
    return {t.name: t for t in InstanceType.objects.all()}


@pytest.fixture
def networks(staff) -> dict[str, Network]:  # noqa: F811 - the fixtures imported above
    """The three address classes: private 10.10.0.0/24, local 172.16.0.0/24, public 203.0.113.0/28 (13 leases)."""
    return {
        "private": network_create(
            actor=staff,
            name="private",
            kind="private",
            cidr="10.10.0.0/24",
            gateway="10.10.0.1",
            dns=["10.10.0.1"],
            bridge="br-private",
        ),
        "local": network_create(
            actor=staff,
            name="local",
            kind="local",
            cidr="172.16.0.0/24",
            gateway="172.16.0.1",
            dns=[],
            bridge="br-local",
        ),
        "public": network_create(
            actor=staff,
            name="public",
            kind="public",
            cidr="203.0.113.0/28",
            gateway="203.0.113.1",
            dns=["203.0.113.1"],
            bridge="br-public",
        ),
    }


@pytest.fixture
def image(owner, registered, entry_for) -> Image:  # noqa: F811 - the fixtures imported above
    """A real signed machine image: the creator's Ubuntu entry, allowed by the default policy."""
    registered(owner, "owner")
    return marketplace_services.entry_upload(raw=entry_for("owner"), uploader=owner).image


@pytest.fixture
def ported_image(owner, registered, entry_for) -> Image:  # noqa: F811 - the fixtures imported above
    """The creator's image whose entry says it serves ssh, http and port 5432 and answers ping (inbound-port, icmp)."""
    registered(owner, "owner")
    raw = entry_for("owner", inbound_ports=(22, 80, 5432), icmp=(8,))
    return marketplace_services.entry_upload(raw=raw, uploader=owner).image


@pytest.fixture
def instance_on(project, image) -> Callable[..., Instance]:
    """``instance_on(host, itype, state=…, name=…)``: an instance of ``project`` from ``image`` on ``host``, sized
    as ``itype``, made directly (no request, no worker)."""

    def make(host: Host | None, itype: InstanceType, *, state: str = "running", name: str = "vm") -> Instance:
        return Instance.objects.create(
            name=name,
            project=project,
            image=image,
            image_identifier=image.identifier,
            instance_type=itype,
            vcpus=itype.vcpus,
            ram_mib=itype.ram_mib,
            root_gib=itype.root_gib,
            host=host,
            network="private",
            state=state,
        )

    return make


def public_key_line() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.fixture
def micro_request(request, owner, project, types, owner_key) -> Callable[..., Instance]:  # noqa: F811 - owner: imported above
    """``micro_request(name, image=…, **changes)``: a t1.micro on the private network with the owner's SSH key,
    requested through the service layer (default image: the ``image`` fixture's; ``changes``: other arguments of
    ``instance_request``)."""

    def make(name: str, *, image: Image | None = None, **changes: Any) -> Instance:
        chosen = image if image is not None else request.getfixturevalue("image")
        arguments = {
            "actor": owner,
            "project": project,
            "image": chosen,
            "instance_type": types["t1.micro"],
            "network": "private",
            "ssh_keys": [owner_key.pk],
        }
        return instance_request(**{**arguments, **changes}, name=name)

    return make


@pytest.fixture
def owner_key(owner):  # noqa: F811 - the fixtures imported above
    return ssh_key_add(actor=owner, name="laptop", public_key=public_key_line())


@pytest.fixture(autouse=True)
def enqueued(request, monkeypatch) -> list[tuple[str, int, str]]:
    """Worker steps sent by the code under test, as (task name, instance or attachment id, queue), instead of the
    broker (and storage's tasks, as (``storage.volume_<create|delete>``, volume id, queue)); tests marked ``worker``
    send them for real."""
    sent: list[tuple[str, int, str]] = []
    if request.node.get_closest_marker("worker") is None:
        from compute import attachments, execution
        from storage import services as storage_services

        def record(step, instance, *, countdown=None):
            sent.append((step, instance.pk, execution.host_queue(instance)))

        def record_storage(task_name, volume_id):
            sent.append((f"storage.volume_{task_name}", volume_id, settings.STORAGE_QUEUE))

        def record_attachment(step, attachment):
            sent.append((step, attachment.pk, f"host.{attachment.instance.host.name}"))

        monkeypatch.setattr(execution, "enqueue", record)
        monkeypatch.setattr(attachments, "enqueue", record_attachment)
        monkeypatch.setattr(storage_services, "_enqueue", record_storage)
    return sent


@pytest.fixture(autouse=True)
def frontend_syncs(request, monkeypatch) -> list[str]:
    """The front end's rule syncs sent by the code under test (``compute.frontend_sync`` on ``FRONTEND_QUEUE``), one
    queue name each, instead of the broker; tests marked ``worker`` send them for real."""
    sent: list[str] = []
    if request.node.get_closest_marker("worker") is None:
        from compute import access

        monkeypatch.setattr(access, "enqueue_frontend_sync", lambda: sent.append(settings.FRONTEND_QUEUE))
    return sent


@pytest.fixture
def served_image(owner, registered, keyring):  # noqa: F811 - the fixtures imported above
    """A real small raw image under the worker's allowed ``file:`` directory, published with a signed entry."""
    registered(owner, "owner")
    content = os.urandom(64 * 1024)
    directory = settings.MARKETPLACE_FILE_LOCATION_DIRS[0]
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"e2e-{uuid.uuid4().hex}.raw")
    with open(path, "wb") as out:
        out.write(content)
    document = metadata.build(
        image_bytes=len(content),
        checksums=checksums_of(content),
        type="base",
        title="End-to-end image",
        os="Ubuntu",
        os_arch="x86_64",
        kind="machine",
        format="raw",
        compression="",
        locations=(f"file://{path}",),
    )
    entry = marketplace_services.entry_upload(raw=keyring["owner"].sign(document, now=T0), uploader=owner)
    yield entry.image.identifier
    os.unlink(path)
    shutil.rmtree(settings.IMAGE_CACHE_DIR / entry.image.identifier, ignore_errors=True)
