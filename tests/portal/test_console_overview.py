"""The admin console's overview: what waits for an administrator, hosts by state, instances and volumes by
state, room for VMs per type and the latest changes. Staff only, a fixed number of queries."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.services import RegistrationInput, registration_submit
from compute.models import Host
from compute.services import instance_types_seed

pytestmark = pytest.mark.django_db


def _register(username: str) -> None:
    registration_submit(
        data=RegistrationInput(
            username=username,
            email=f"{username}@example.org",
            first_name="A",
            last_name="B",
            password="Lunar-Orbit-Paper-42",
            accept_terms=True,
        )
    )


def test_a_researcher_gets_the_403_page_and_an_anonymous_visitor_the_login(client, owner):
    assert client.get("/console/")["Location"] == "/accounts/login/?next=/console/"
    client.force_login(owner)
    assert client.get("/console/").status_code == 403


def test_the_overview_counts_what_waits_and_what_runs(client, staff):
    _register("ada_l")
    _register("marie_c")
    instance_types_seed(actor=staff)
    Host.objects.create(name="hv1", uri="test:///hv1", vcpus=8, ram_mib=16384)
    Host.objects.create(name="hv2", uri="test:///hv2", vcpus=8, ram_mib=16384, maintenance=True)
    Host.objects.create(name="hv3", uri="test:///hv3", vcpus=8, ram_mib=16384, state="down")
    client.force_login(staff)
    answer = client.get("/console/")
    page = answer.content.decode()
    assert "2 registrations</a> waiting for a decision." in page
    assert answer.context["hosts"] == {"up": 1, "down": 1, "maintenance": 1, "disabled": 0}
    # Room for VMs counts the one host that takes new VMs: 8 vCPU × 4 (overcommit) and 16384 MiB × 1.
    room = {row.instance_type.name: (row.fits_now, row.fits_when_empty) for row in answer.context["room"]}
    assert room["t1.micro"] == (32, 32) and room["m1.xlarge"] == (2, 2)
    assert '<tr data-type="m1.small"><td>m1.small</td><td>1</td><td>1536</td><td class="fits">10</td>' in page
    assert "accounts.registration.submitted" in page  # the latest changes


def test_the_overview_costs_the_same_queries_however_much_the_site_holds(client, staff):
    instance_types_seed(actor=staff)
    Host.objects.create(name="first", uri="test:///first", vcpus=8, ram_mib=16384)
    client.force_login(staff)
    with CaptureQueriesContext(connection) as few:
        client.get("/console/")
    for n in range(5):
        _register(f"user_{n}")
        Host.objects.create(name=f"hv{n}", uri=f"test:///hv{n}", vcpus=8, ram_mib=16384)
    with CaptureQueriesContext(connection) as many:
        client.get("/console/")
    assert len(many) == len(few)
