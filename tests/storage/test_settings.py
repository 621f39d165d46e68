"""The storage settings: start-up stops on a malformed value naming it; the IQN authority follows the site."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.portal.test_settings import _start_django


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STORAGE_BACKENDS": "file,ceph"}, "STORAGE_BACKENDS must list file and/or iscsi"),
        ({"STORAGE_DEFAULT_BACKEND": "iscsi"}, "STORAGE_DEFAULT_BACKEND must be in STORAGE_BACKENDS"),
        ({"STORAGE_FILE_FORMAT": "vmdk"}, "STORAGE_FILE_FORMAT must be qcow2 or raw"),
        ({"ISCSI_PORTAL": "storage.example.org"}, "ISCSI_PORTAL must be host:port"),
        ({"ISCSI_PORTAL": "a b:3260"}, "ISCSI_PORTAL must be host:port"),
        ({"ISCSI_IQN_DOMAIN": "org.example;rm"}, "ISCSI_IQN_DOMAIN must be a reversed domain"),
        ({"STORAGE_VOLUME_MAX_GIB": "0"}, "STORAGE_VOLUME_MAX_GIB must be at least 1"),
        ({"ISCSI_INITIATORS": ""}, "ISCSI_INITIATORS must be ALL or addresses/subnets"),
        ({"ISCSI_INITIATORS": "10.0.0.0/8,--op delete"}, "ISCSI_INITIATORS must be ALL or addresses/subnets"),
    ],
)
def test_start_up_stops_on_a_malformed_storage_variable_naming_it(env, message):
    result = _start_django(**env)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize(
    ("site_url", "domain"),
    [("https://cloud.example.org", "org.example.cloud"), ("http://127.0.0.1:8000", "localdomain.localhost")],
)
def test_the_iqn_authority_defaults_to_the_site_host_reversed(site_url, domain):
    result = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings as s; print(s.ISCSI_IQN_DOMAIN)"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "SITE_URL": site_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == domain, result.stderr
