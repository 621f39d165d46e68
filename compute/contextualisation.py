"""The cloud-init NoCloud seed ISO that tells a new guest who it is. Pure: bytes in memory, no files.

The ISO (volume label ``cidata``) holds ``meta-data`` (instance id, hostname), ``user-data`` (the project's SSH
keys as ``#cloud-config``; a MIME multipart when the user gives their own user-data too) and ``network-config``
(version 2: the lease's static address on the NIC with the lease's MAC). The YAML files are written as JSON,
which is YAML: exact quoting of whatever the user typed, and no YAML library at run time.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email import message_from_string
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from io import BytesIO
from typing import Any
from uuid import UUID

import pycdlib

from core.errors import ApplicationError

VOLUME_LABEL = "cidata"
USER_DATA_MAX_BYTES = 64 * 1024
SSH_KEY_MAX_CHARS = 16 * 1024

# cloud-init's own table of first lines → part types (cloudinit/handlers/__init__.py); longest prefix first.
_PART_TYPES = (
    ("#cloud-config-archive", "text/cloud-config-archive"),
    ("#cloud-config", "text/cloud-config"),
    ("#cloud-boothook", "text/cloud-boothook"),
    ("#include-once", "text/x-include-once-url"),
    ("#include", "text/x-include-url"),
    ("#part-handler", "text/part-handler"),
    ("#upstart-job", "text/upstart-job"),
    ("## template: jinja", "text/jinja2"),
    ("#!", "text/x-shellscript"),
)
_HOSTNAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
# Our part merges into the user's cloud-config instead of being replaced by it: the user's settings win, but
# the project's SSH keys are appended to any the user lists.
_MERGE_KEEPING_USER_SETTINGS = "list(append)+dict(no_replace,recurse_list)+str()"


@dataclass(frozen=True)
class NetworkConfig:
    """The lease: ``address`` with its prefix (``10.1.0.5/24``), on the NIC whose MAC is ``mac``."""

    mac: str
    address: str
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    address6: str | None = None  # the lease's IPv6 address with its prefix (``fd00:10::5/64``), if the network has one
    gateway6: str | None = None

    def __post_init__(self) -> None:
        if not _MAC.match(self.mac):
            raise ValueError(f"MAC address {self.mac!r} is not six lower-case hex pairs")
        interface = ipaddress.ip_interface(self.address)
        if "/" not in self.address:
            raise ValueError(f"address {self.address!r} needs its prefix length")
        if self.gateway is not None and ipaddress.ip_address(self.gateway) not in interface.network:
            raise ValueError(f"gateway {self.gateway} is outside {interface.network}")
        for server in self.dns:
            ipaddress.ip_address(server)
        if self.address6 is not None:
            interface6 = ipaddress.ip_interface(self.address6)
            if interface6.version != 6 or "/" not in self.address6:
                raise ValueError(f"IPv6 address {self.address6!r} needs to be IPv6 with its prefix length")
            if self.gateway6 is not None and ipaddress.ip_address(self.gateway6) not in interface6.network:
                raise ValueError(f"IPv6 gateway {self.gateway6} is outside {interface6.network}")


def part_type(user_data: str) -> str:
    """The MIME type cloud-init gives user-data by its first line; ``text/plain`` (which it ignores) if unknown."""
    for prefix, mime_type in _PART_TYPES:
        if user_data.startswith(prefix):
            return mime_type
    return "text/plain"


def validate_user_data(user_data: str) -> None:
    """Refuse user-data over :data:`USER_DATA_MAX_BYTES` (UTF-8) or with NUL characters."""
    size = len(user_data.encode("utf-8"))
    if size > USER_DATA_MAX_BYTES:
        raise ApplicationError(
            f"user-data is {size} bytes; at most {USER_DATA_MAX_BYTES} are allowed", code="user-data-too-large"
        )
    if "\x00" in user_data:
        raise ApplicationError("user-data must be text without NUL characters", code="user-data-invalid")


def validate_ssh_keys(ssh_keys: Sequence[str]) -> None:
    """Refuse keys that are not one non-empty line of ``type key [comment]`` each."""
    if isinstance(ssh_keys, str):
        raise TypeError("ssh_keys is a sequence of keys, not one string")
    for number, key in enumerate(ssh_keys, start=1):
        if any(char in key for char in "\r\n\x00") or len(key.split()) < 2 or len(key) > SSH_KEY_MAX_CHARS:
            raise ApplicationError(
                f"SSH key {number} must be one line of the form 'type key [comment]'", code="ssh-key-invalid"
            )


def _validate_hostname(hostname: str) -> None:
    if len(hostname) > 253 or not _HOSTNAME.match(hostname):
        raise ApplicationError(
            f"host name {hostname!r} must be lower-case letters, digits and hyphens, in dot-separated labels",
            code="hostname-invalid",
        )


def _yaml(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


def meta_data(*, instance_uuid: UUID, hostname: str) -> str:
    """The NoCloud ``meta-data`` file."""
    return _yaml({"instance-id": str(instance_uuid), "local-hostname": hostname})


def user_data_file(*, ssh_keys: Sequence[str], user_data: str | None, swap_label: str | None = None) -> str:
    """The ``user-data`` file: our ``#cloud-config``, alone or with the user's part in a MIME multipart. With
    ``swap_label``, our part also has cloud-init add the disk of that label as swap (``mounts``; ``swapon -a``)."""
    config: dict[str, Any] = {"ssh_authorized_keys": [key.strip() for key in ssh_keys]}
    if swap_label:
        config["mounts"] = [[f"LABEL={swap_label}", "none", "swap", "sw", "0", "0"]]
    ours = "#cloud-config\n" + _yaml(config)
    if user_data is None:
        return ours
    multipart = MIMEMultipart()
    theirs = message_from_string(user_data) if part_type(user_data) == "text/plain" else None
    if theirs is not None and theirs.is_multipart():
        # The user sent their own multipart: carry its parts over one by one.
        for part in theirs.walk():
            if not part.is_multipart():
                multipart.attach(part)
    else:
        subtype = part_type(user_data).split("/", 1)[1]
        multipart.attach(MIMEText(user_data, subtype, "utf-8"))
    part = MIMEText(ours, "cloud-config", "utf-8")
    part["Merge-Type"] = _MERGE_KEEPING_USER_SETTINGS
    multipart.attach(part)
    return multipart.as_string()


def network_config(network: NetworkConfig) -> str:
    """The ``network-config`` file (version 2): the lease's address, route and DNS on the NIC matched by MAC."""
    nic: dict[str, Any] = {
        "match": {"macaddress": network.mac},
        "set-name": "eth0",
        "addresses": [network.address, *([network.address6] if network.address6 else [])],
    }
    routes = []
    if network.gateway:
        routes.append({"to": "default", "via": network.gateway})
    if network.address6 and network.gateway6:
        routes.append({"to": "::/0", "via": network.gateway6})
    if routes:
        nic["routes"] = routes
    if network.dns:
        nic["nameservers"] = {"addresses": list(network.dns)}
    return _yaml({"version": 2, "ethernets": {"eth0": nic}})


def seed_iso(
    *,
    instance_uuid: UUID,
    hostname: str,
    ssh_keys: Sequence[str],
    user_data: str | None,
    network: NetworkConfig | None,
    swap_label: str | None = None,
) -> bytes:
    """The NoCloud seed ISO for one instance. Without ``network`` there is no ``network-config`` (DHCP); with
    ``swap_label`` the user-data has cloud-init use the disk of that label as swap.

    Raises :class:`ApplicationError` for user-data over the limit, malformed SSH keys or host name."""
    validate_ssh_keys(ssh_keys)
    if user_data is not None:
        validate_user_data(user_data)
    _validate_hostname(hostname)
    files = {
        "meta-data": meta_data(instance_uuid=instance_uuid, hostname=hostname),
        "user-data": user_data_file(ssh_keys=ssh_keys, user_data=user_data, swap_label=swap_label),
    }
    if network is not None:
        files["network-config"] = network_config(network)
    iso = pycdlib.PyCdlib()
    # Rock Ridge and Joliet carry the lower-case names with a hyphen that ISO 9660 itself cannot.
    iso.new(interchange_level=3, vol_ident=VOLUME_LABEL, joliet=3, rock_ridge="1.09")
    for name, text in files.items():
        content = text.encode("utf-8")
        iso_name = name.replace("-", "").upper()[:8]
        iso.add_fp(BytesIO(content), len(content), f"/{iso_name}.;1", rr_name=name, joliet_path=f"/{name}")
    out = BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()
