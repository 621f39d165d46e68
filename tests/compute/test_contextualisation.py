"""The cloud-init NoCloud seed ISO, read back with pycdlib as a guest's blkid and mount would see it."""

from __future__ import annotations

import email
import email.mime.multipart
import email.mime.text
import uuid
from io import BytesIO

import pycdlib
import pytest
import yaml

from compute.contextualisation import (
    USER_DATA_MAX_BYTES,
    NetworkConfig,
    part_type,
    seed_iso,
)
from core.errors import ApplicationError

INSTANCE = uuid.UUID("0b6f3f0e-7d1c-4f6a-9c1b-2a3d4e5f6a7b")
KEYS = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOq0 alice@laptop",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ bob",
)
LEASE = NetworkConfig(mac="52:54:00:ab:cd:ef", address="10.1.0.5/24", gateway="10.1.0.1", dns=("10.1.0.2", "9.9.9.9"))


def _seed(**overrides) -> bytes:
    fields = {"instance_uuid": INSTANCE, "hostname": "vm-1", "ssh_keys": KEYS, "user_data": None, "network": LEASE}
    return seed_iso(**(fields | overrides))


def _files(image: bytes) -> dict[str, str]:
    """Every file by its Rock Ridge name, after checking the Joliet tree carries the same content."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(BytesIO(image))
    files = {}
    try:
        for _root, _dirs, names in iso.walk(rr_path="/"):
            for name in names:
                rock_ridge, joliet = BytesIO(), BytesIO()
                iso.get_file_from_iso_fp(rock_ridge, rr_path=f"/{name}")
                iso.get_file_from_iso_fp(joliet, joliet_path=f"/{name}")
                assert rock_ridge.getvalue() == joliet.getvalue()
                files[name] = rock_ridge.getvalue().decode("utf-8")
    finally:
        iso.close()
    return files


def _labels(image: bytes) -> tuple[str, str]:
    iso = pycdlib.PyCdlib()
    iso.open_fp(BytesIO(image))
    try:
        return iso.pvd.volume_identifier.decode().strip(), iso.joliet_vd.volume_identifier.decode("utf-16-be").strip()
    finally:
        iso.close()


def _parts(user_data: str) -> list[email.message.Message]:
    message = email.message_from_string(user_data)
    assert message.is_multipart()
    return [part for part in message.walk() if not part.is_multipart()]


def _text(part: email.message.Message) -> str:
    return part.get_payload(decode=True).decode("utf-8")


def test_the_volume_is_labelled_cidata_in_both_trees():
    assert _labels(_seed()) == ("cidata", "cidata")


def test_the_files_have_their_lower_case_names():
    assert set(_files(_seed())) == {"meta-data", "user-data", "network-config"}


def test_meta_data_names_the_instance_and_host():
    assert yaml.safe_load(_files(_seed())["meta-data"]) == {"instance-id": str(INSTANCE), "local-hostname": "vm-1"}


def test_user_data_without_the_users_own_is_cloud_config_with_the_ssh_keys():
    user_data = _files(_seed())["user-data"]
    assert user_data.startswith("#cloud-config\n")
    assert yaml.safe_load(user_data) == {"ssh_authorized_keys": list(KEYS)}


def test_network_config_puts_the_lease_on_the_nic_with_its_mac():
    assert yaml.safe_load(_files(_seed())["network-config"]) == {
        "version": 2,
        "ethernets": {
            "eth0": {
                "match": {"macaddress": "52:54:00:ab:cd:ef"},
                "set-name": "eth0",
                "addresses": ["10.1.0.5/24"],
                "routes": [{"to": "default", "via": "10.1.0.1"}],
                "nameservers": {"addresses": ["10.1.0.2", "9.9.9.9"]},
            }
        },
    }


def test_without_a_lease_there_is_no_network_config():
    assert "network-config" not in _files(_seed(network=None))


def test_the_users_script_and_our_keys_go_in_one_multipart():
    script = "#!/bin/sh\necho hello > /tmp/hello\n"
    script_part, ours = _parts(_files(_seed(user_data=script))["user-data"])
    assert script_part.get_content_type() == "text/x-shellscript"
    assert _text(script_part) == script
    assert ours.get_content_type() == "text/cloud-config"
    assert yaml.safe_load(_text(ours)) == {"ssh_authorized_keys": list(KEYS)}


def test_our_keys_merge_into_the_users_cloud_config_instead_of_replacing_it():
    theirs = "#cloud-config\npackages: [htop]\nssh_authorized_keys: [ssh-ed25519 AAAA carol]\n"
    their_part, ours = _parts(_files(_seed(user_data=theirs))["user-data"])
    assert their_part.get_content_type() == "text/cloud-config"
    assert yaml.safe_load(_text(their_part))["packages"] == ["htop"]
    assert "list(append)" in ours["Merge-Type"]


def test_the_users_own_multipart_is_carried_over_part_by_part():
    inner = email.mime.multipart.MIMEMultipart()
    inner.attach(email.mime.text.MIMEText("#!/bin/sh\ntrue\n", "x-shellscript"))
    inner.attach(email.mime.text.MIMEText("#cloud-boothook\ntrue\n", "cloud-boothook"))
    parts = _parts(_files(_seed(user_data=inner.as_string()))["user-data"])
    assert [part.get_content_type() for part in parts] == [
        "text/x-shellscript",
        "text/cloud-boothook",
        "text/cloud-config",
    ]


def test_non_ascii_user_data_survives():
    theirs = "#!/bin/sh\necho 'Grüße, 世界'\n"
    script_part, _ours = _parts(_files(_seed(user_data=theirs))["user-data"])
    assert _text(script_part) == theirs


@pytest.mark.parametrize(
    ("first_line", "expected"),
    [
        ("#!/usr/bin/env python3", "text/x-shellscript"),
        ("#cloud-config", "text/cloud-config"),
        ("#cloud-config-archive", "text/cloud-config-archive"),
        ("#cloud-boothook", "text/cloud-boothook"),
        ("#include", "text/x-include-url"),
        ("#include-once", "text/x-include-once-url"),
        ("#part-handler", "text/part-handler"),
        ("## template: jinja", "text/jinja2"),
        ("hello", "text/plain"),
    ],
)
def test_the_part_type_comes_from_the_first_line(first_line, expected):
    assert part_type(first_line + "\nrest\n") == expected


def test_user_data_at_the_limit_is_accepted_and_one_byte_more_is_refused():
    body = "#!/bin/sh\n"
    _seed(user_data=body + "#" * (USER_DATA_MAX_BYTES - len(body)))
    with pytest.raises(ApplicationError) as refused:
        _seed(user_data=body + "#" * (USER_DATA_MAX_BYTES - len(body) + 1))
    assert refused.value.code == "user-data-too-large"


def test_the_limit_counts_bytes_not_characters():
    with pytest.raises(ApplicationError):
        _seed(user_data="#!/bin/sh\n" + "é" * (USER_DATA_MAX_BYTES // 2))


@pytest.mark.parametrize(
    "key",
    [
        "ssh-ed25519 AAAA alice\nssh-rsa BBBB mallory",
        "ssh-ed25519 AAAA alice\r",
        "",
        "ssh-ed25519",
    ],
    ids=["two-lines", "carriage-return", "empty", "type-only"],
)
def test_an_ssh_key_that_is_not_one_line_is_refused(key):
    with pytest.raises(ApplicationError) as refused:
        _seed(ssh_keys=(*KEYS, key))
    assert refused.value.code == "ssh-key-invalid"


@pytest.mark.parametrize("hostname", ["", "-vm", "vm_1", "VM 1", "a" * 64])
def test_a_malformed_hostname_is_refused(hostname):
    with pytest.raises(ApplicationError) as refused:
        _seed(hostname=hostname)
    assert refused.value.code == "hostname-invalid"


@pytest.mark.parametrize(
    "build",
    [
        lambda: NetworkConfig(mac="52:54:00:ab:cd", address="10.1.0.5/24"),
        lambda: NetworkConfig(mac="52:54:00:ab:cd:ef", address="10.1.0.5"),
        lambda: NetworkConfig(mac="52:54:00:ab:cd:ef", address="10.1.0.5/24", gateway="10.2.0.1"),
        lambda: NetworkConfig(mac="52:54:00:ab:cd:ef", address="10.1.0.5/24", dns=("resolver",)),
    ],
    ids=["short-mac", "no-prefix", "gateway-off-subnet", "dns-not-an-address"],
)
def test_a_lease_of_the_wrong_shape_is_refused_when_built(build):
    with pytest.raises(ValueError):
        build()
