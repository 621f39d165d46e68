# ruff: noqa: F811 - pytest fixtures imported from the compute tests are parameters of the test below
"""A researcher's first day in a real browser, against a live server and a real worker: register, be approved by
staff in the registrations console, log in, launch a VM from an allowed image and watch it reach ``running`` without
reloading, make a volume and attach it, terminate the VM. Every page of the portal is saved as a screenshot under
``var/screenshots/`` at a laptop's and a phone's width."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core import mail

from compute.models import FirewallRule, Host, Instance
from storage.models import Volume
from tests.accounts.conftest import REGISTRATION_PASSWORD
from tests.compute.conftest import (  # noqa: F401 - the compute tests' fixtures
    _signed_cache,
    entry_for,
    image,
    keyring,
    networks,
    owner,
    registered,
    served_image,
    staff,
    types,
)
from tests.compute.test_end_to_end import worker_host  # noqa: F401 - a test-driver host the worker opens
from tests.factories import TEST_PASSWORD
from tests.marketplace.keys import pgp_keys  # noqa: F401 - a session fixture entry_for needs

pytestmark = [
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img"),
]

SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"
LAPTOP = {"width": 1366, "height": 800}
PHONE = {"width": 390, "height": 844}
# How long the worker may take for one step of the journey (download, disks, boot on the test driver).
STEP_MS = 90_000


def _shoot(page, name: str) -> None:
    """Save the page as it is at a laptop's and a phone's width (the whole page), then back to the laptop."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for label, size in (("laptop", LAPTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
        # The page's own content fits the width (wide tables scroll inside their box).
        overflow = page.evaluate(
            "(() => { const m = document.querySelector('main'); return m.scrollWidth - m.clientWidth; })()"
        )
        assert overflow <= 1, f"{name} at {label} width: the content is {overflow} px wider than the screen"
    page.set_viewport_size(LAPTOP)


def _csp_violations(page) -> list[str]:
    violations: list[str] = []
    page.on("console", lambda message: "Content Security Policy" in message.text and violations.append(message.text))
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) =>"
        " console.error('Content Security Policy violation: ' + e.violatedDirective + ' ' + e.blockedURI));"
    )
    return violations


def _volume_reaches(volume: Volume, state: str) -> None:
    deadline = time.monotonic() + STEP_MS / 1000
    while Volume.objects.get(pk=volume.pk).state != state and time.monotonic() < deadline:
        time.sleep(0.3)
    assert Volume.objects.get(pk=volume.pk).state == state


def _register_and_be_approved(browser, live_server) -> None:
    applicant = browser.new_context(base_url=live_server.url).new_page()
    applicant.goto("/accounts/register/")
    applicant.get_by_label("Username").fill("marie")
    applicant.get_by_label("E-mail").fill("marie@example.org")
    applicant.get_by_label("Given name").fill("Marie")
    applicant.get_by_label("Family name").fill("Curie")
    applicant.get_by_label("Password", exact=True).fill(REGISTRATION_PASSWORD)
    applicant.get_by_label("Password (again)").fill(REGISTRATION_PASSWORD)
    applicant.get_by_label("I accept the terms of use").check()
    applicant.get_by_role("button", name="Send the request").click()
    applicant.wait_for_url("**/accounts/register/done/")
    [confirmation] = mail.outbox
    link = re.search(r"https?://[^/\s]+(/accounts/register/confirm/\S+/)", confirmation.body).group(1)
    applicant.goto(link)
    applicant.get_by_role("button", name="Confirm my e-mail address").click()
    applicant.get_by_text("marie@example.org is confirmed").wait_for()
    applicant.context.close()

    admin = browser.new_context(base_url=live_server.url).new_page()
    admin.goto("/accounts/login/")
    admin.get_by_label("Username").fill("staff")
    admin.get_by_label("Password").fill(TEST_PASSWORD)
    admin.get_by_role("button", name="Log in").click()
    admin.wait_for_url("**/")
    admin.get_by_role("link", name="Console", exact=True).click()
    admin.get_by_role("link", name="Registrations").click()
    admin.get_by_role("button", name="Approve marie").click()
    admin.get_by_text("marie is approved").wait_for()
    admin.context.close()


def test_a_researcher_registers_launches_a_vm_watches_it_run_attaches_a_volume_and_terminates_it(
    celery_worker_process, browser, live_server, staff, types, networks, served_image, worker_host
):
    _register_and_be_approved(browser, live_server)

    context = browser.new_context(base_url=live_server.url, viewport=LAPTOP)
    page = context.new_page()
    violations = _csp_violations(page)
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("marie")
    page.get_by_label("Password").fill(REGISTRATION_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")
    assert page.get_by_role("heading", name="Dashboard").is_visible()
    assert page.get_by_text("You have no VMs running.").is_visible()
    vcpu_quota = page.locator('table.quota[data-project="personal-marie"] tr[data-resource="vcpus"]')
    assert vcpu_quota.locator("td.num").inner_text() == "0 of 20"
    # The worker's host: 4 vCPU × 4 overcommit and 8 GiB: 16 of t1.micro (1 vCPU, 512 MiB) fit.
    assert page.locator('#room tr[data-type="t1.micro"] td.num').inner_text() == "16 / 16"
    _shoot(page, "dashboard-empty")

    # Launch: the allowed image, a type, the private network; the preview follows the choices.
    page.get_by_role("link", name="Launch a VM").click()
    page.wait_for_url("**/instances/new/")
    image = page.locator(f"#image-{served_image}")
    assert image.is_enabled()
    page.locator(f'li[data-image="{served_image}"] summary').click()
    assert page.locator(f'li[data-image="{served_image}"] .rule-lines').is_visible()
    image.check()
    page.get_by_label("Name", exact=True).fill("journey")
    page.get_by_label("Instance type").select_option("t1.micro")
    page.get_by_label("Network").select_option("private")
    page.locator('#preview li[data-quota="vCPU"]').filter(has_text="vCPU 0 → 1 of 20").wait_for()
    page.locator("#room-verdict").filter(has_text="16 more t1.micro VMs fit now").wait_for()
    page.get_by_label("Network").select_option("public")
    page.locator('#preview li[data-quota="Public IP"]').filter(has_text="Public IP 0 → 1 of 2").wait_for()
    page.get_by_label("Network").select_option("private")
    page.locator('#preview li[data-quota="Public IP"]').wait_for(state="detached")
    _shoot(page, "launch")
    page.get_by_role("button", name="Launch").click()
    page.wait_for_url(re.compile(r".*/instances/[0-9a-f-]{36}/$"))
    vm = Instance.objects.get(name="journey")
    assert page.get_by_text("VM journey is requested on host").is_visible()

    # The state moves on screen: the page is never reloaded (a mark set on it now is still there at the end).
    page.evaluate("window.stillTheSamePage = true")
    page.locator("#instance-state").filter(has_text="running").wait_for(timeout=STEP_MS)
    page.locator('#instance-events tr[data-action="compute.instance.running"]').wait_for()
    assert page.evaluate("window.stillTheSamePage") is True
    page.locator("#console-text, #console-empty").first.wait_for()  # the host's worker answered
    _shoot(page, "instance-running")

    # A firewall rule added with the VM page's form is listed there (this image's entry names no inbound port).
    page.get_by_label("Port", exact=True).fill("8080")
    page.get_by_label("From (IPv4 CIDR)").fill("198.51.100.0/24")
    page.get_by_role("button", name="Add rule").click()
    page.get_by_text("VM journey now lets in tcp port 8080 from 198.51.100.0/24.").wait_for()
    rule = FirewallRule.objects.get(instance=vm)
    assert page.locator(f'#firewall tr[data-rule="{rule.pk}"]').inner_text().split()[:3] == [
        "tcp",
        "8080",
        "198.51.100.0/24",
    ]

    page.get_by_role("link", name="Dashboard").first.click()
    row = page.locator(f'tr[data-instance="{vm.uuid}"]')
    assert row.get_attribute("data-state") == "running"
    assert "journey" in row.inner_text() and "10.10.0.2" in row.inner_text()
    assert page.locator("tr.totals").inner_text().split()[:3] == ["Total:", "1", "VM"]
    _shoot(page, "dashboard")

    # A volume, made on the volumes page, then attached from the VM's page once the worker has made it.
    page.get_by_role("link", name="Create a volume").click()
    page.get_by_label("Name").fill("results")
    page.get_by_label("Size (GiB)").fill("1")
    page.get_by_role("button", name="Request volume").click()
    page.wait_for_url(re.compile(r".*/storage/volumes/[0-9a-f-]{36}/$"))
    volume = Volume.objects.get(name="results")
    _volume_reaches(volume, "available")
    page.goto(f"/instances/{vm.uuid}/")
    page.get_by_label("Attach a volume").select_option(str(volume.uuid))
    page.get_by_role("button", name="Attach", exact=True).click()
    page.get_by_text("Attaching volume results to VM journey.").wait_for()
    attached = page.locator(f'li[data-volume="{volume.uuid}"] .badge')
    attached.filter(has_text=re.compile(r"^attached$")).wait_for(timeout=STEP_MS)
    _shoot(page, "instance-with-volume")

    # Terminate, confirmed in the browser's dialog; the VM ends on screen and the volume is free again.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Terminate").click()
    page.get_by_text("Terminating VM journey.").wait_for()
    page.evaluate("window.stillTheSamePage = true")
    page.locator("#instance-state").filter(has_text="terminated").wait_for(timeout=STEP_MS)
    assert page.evaluate("window.stillTheSamePage") is True
    _shoot(page, "instance-terminated")
    _volume_reaches(volume, "available")
    page.goto("/")
    assert page.locator(f'tr[data-instance="{vm.uuid}"]').count() == 0
    assert violations == []
    context.close()


def test_vms_checked_on_the_dashboard_stay_checked_across_refreshes_and_terminate_together_once_confirmed(
    browser, live_server, owner, project, types, networks, image
):
    host = Host.objects.create(name="h1", uri="test:///default", vcpus=8, ram_mib=16384)
    vms = [
        Instance.objects.create(
            name=name, project=project, image=image, image_identifier=image.identifier,
            instance_type=types["t1.micro"], vcpus=1, ram_mib=512, root_gib=10, host=host, network="private",
            state="scheduled",
        )
        for name in ("first", "second", "kept")
    ]  # fmt: skip
    page = browser.new_context(base_url=live_server.url, viewport=LAPTOP).new_page()
    page.add_init_script(
        "document.addEventListener('htmx:afterSwap',"
        " () => { window.tableRefreshes = (window.tableRefreshes || 0) + 1; });"
    )
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("owner")
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")
    # By keyboard: focus the first box, tick it with the space bar; the second with a click.
    page.get_by_label("Select first").focus()
    page.keyboard.press("Space")
    page.get_by_label("Select second").check()
    # VMs between states are asked about every 2 s; after a refresh the boxes are still ticked.
    deadline = time.monotonic() + STEP_MS / 1000
    while not page.evaluate("window.tableRefreshes || 0") and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert page.evaluate("window.tableRefreshes || 0") >= 1
    assert page.get_by_label("Select first").is_checked() and page.get_by_label("Select second").is_checked()
    assert not page.get_by_label("Select kept").is_checked()

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Terminate selected").click()
    assert sorted(Instance.objects.values_list("state", flat=True)) == ["scheduled"] * 3  # not confirmed: nothing

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Terminate selected").click()
    page.get_by_text("Terminating 2 VMs: second, first.").wait_for()  # in the table's order, newest first
    states = dict(Instance.objects.values_list("name", "state"))
    assert states == {"first": "terminated", "second": "terminated", "kept": "scheduled"}
    assert page.locator(f'tr[data-instance="{vms[2].uuid}"]').is_visible()
    assert page.locator("tr[data-instance]").count() == 1
