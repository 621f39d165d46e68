"""The admin console and the site's main pages in a real browser (Debian's chromium through Playwright):

- staff endorse an image in the image console, and the researcher then sees it allowed;
- staff put a host into maintenance from the hosts page, by keyboard;
- a pass over the main pages at a laptop's size (1366x800) and at a phone's width (390x844): nothing overflows
  horizontally, and each page is saved as ``var/screenshots/<page>-laptop.png`` and ``<page>-phone.png``."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import transaction
from playwright.sync_api import expect

from accounts.services import RegistrationInput, registration_submit
from compute.models import Host, Instance
from compute.networks import lease_take, network_create
from compute.services import instance_types_seed
from core import audit
from marketplace import services as marketplace_services
from marketplace.policy import PolicyRules
from marketplace.policy.services import policy_change
from storage.models import Volume
from tests.factories import TEST_PASSWORD
from tests.marketplace.conftest import (  # noqa: F401 - fixtures shared with the marketplace tests
    IMAGE,
    _signed_cache,
    entry_for,
    keyring,
    owner,
    registered,
    site_key,
    site_keyring_home,
    site_settings,
    staff,
    trusted_keyring,
)
from tests.marketplace.keys import pgp_keys  # noqa: F401 - a session fixture entry_for needs

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parent.parent.parent / "var" / "screenshots"
LAPTOP = {"width": 1366, "height": 800}
PHONE = {"width": 390, "height": 844}


def _log_in(browser, live_server, username: str, *, viewport=LAPTOP):
    context = browser.new_context(base_url=live_server.url, viewport=viewport)
    page = context.new_page()
    if username:
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(TEST_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{live_server.url}/")
    return context, page


def test_staff_endorse_an_image_in_the_console_and_the_researcher_then_sees_it_allowed(
    browser,
    live_server,
    owner,  # noqa: F811 - the fixtures imported above
    staff,  # noqa: F811
    project,
    registered,  # noqa: F811
    entry_for,  # noqa: F811
    site_key,  # noqa: F811
):
    registered(owner, "owner")
    image = marketplace_services.entry_upload(raw=entry_for("owner"), uploader=owner).image
    policy_change(actor=staff, rules=PolicyRules.from_json({"required_endorsers": {"k": 1, "of": ["site"]}}))

    researcher_context, researcher = _log_in(browser, live_server, "member")
    researcher.goto(f"/marketplace/images/{image.identifier}/")
    expect(researcher.locator("#policy-verdict")).to_have_text("denied")
    expect(researcher.locator("#policy-denied")).to_contain_text("missing: site")

    admin_context, admin = _log_in(browser, live_server, "staff")
    admin.get_by_role("link", name="Console", exact=True).click()
    console = admin.get_by_role("navigation", name="Admin console")
    console.get_by_role("link", name="Images").click()
    admin.get_by_label("Show").select_option("denied")
    admin.get_by_role("button", name="Filter").click()
    admin.get_by_role("link", name="Ubuntu 24.04 LTS").click()
    admin.get_by_role("button", name="Endorse with the site key").click()
    expect(admin.get_by_text(f"{image.identifier} is endorsed with the site key.")).to_be_visible()
    expect(admin.locator("#policy-verdict")).to_have_text("allowed")
    # The audit log page shows the endorsement, filtered by its action.
    admin.get_by_role("navigation", name="Admin console").get_by_role("link", name="Audit log").click()
    admin.get_by_label("Action (dotted prefix").fill("marketplace.")
    admin.get_by_role("button", name="Filter").click()
    expect(admin.locator("#audit tbody tr").first).to_contain_text("staff")

    researcher.reload()
    expect(researcher.locator("#policy-verdict")).to_have_text("allowed")
    expect(researcher.locator("#policy-denied")).to_have_count(0)
    researcher_context.close()
    admin_context.close()


def test_staff_put_a_host_into_maintenance_by_keyboard_and_see_it_marked(browser, live_server, staff):  # noqa: F811 - the fixtures imported above
    Host.objects.create(name="hv1", uri="test:///hv1", vcpus=8, ram_mib=16384)
    context, page = _log_in(browser, live_server, "staff")
    page.goto("/console/hosts/")
    reason = page.get_by_label("Reason for maintenance of hv1")
    reason.focus()
    page.keyboard.type("disk swap")
    page.keyboard.press("Tab")  # to the button
    expect(page.get_by_role("button", name="Start maintenance of hv1")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_text("Host hv1 is in maintenance: no new VM goes there.")).to_be_visible()
    expect(page.locator('tr[data-host="hv1"] .badge')).to_have_text("maintenance")
    assert Host.objects.get(name="hv1").maintenance is True
    context.close()


@pytest.fixture
def site_world(owner, staff, project, registered, entry_for, site_key):  # noqa: F811 - the fixtures imported above
    """A site with something on every page: an image (site-endorsed), hosts, the three networks, VMs holding
    addresses, volumes, a pending registration and an audit log."""
    registered(owner, "owner")
    image = marketplace_services.entry_upload(raw=entry_for("owner"), uploader=owner).image
    marketplace_services.image_site_endorse(actor=staff, image=image)
    types = {t.name: t for t in instance_types_seed(actor=staff)}
    hosts = [
        Host.objects.create(
            name=f"hypervisor-{n:02}.cluster.example.org",
            uri=f"qemu+ssh://root@hypervisor-{n:02}.cluster.example.org/system",
            vcpus=32,
            ram_mib=131072,
            maintenance=n == 3,
        )
        for n in (1, 2, 3)
    ]
    for kind, cidr in [("private", "10.10.0.0/24"), ("local", "172.16.0.0/24"), ("public", "203.0.113.0/28")]:
        network_create(
            actor=staff,
            name=f"{kind}-network",
            kind=kind,
            cidr=cidr,
            gateway=cidr.replace(".0/", ".1/").split("/")[0],
            dns=[],
            bridge=f"br-{kind}",
        )
    for n, (itype, state, network) in enumerate(
        [("m1.large", "running", "public"), ("t1.micro", "stopped", "private"), ("c1.xlarge", "error", "local")]
    ):
        with transaction.atomic():
            vm = Instance.objects.create(
                name=f"climate-model-run-{n}",
                project=project,
                created_by=owner,
                image=image,
                image_identifier=image.identifier,
                instance_type=types[itype],
                vcpus=types[itype].vcpus,
                ram_mib=types[itype].ram_mib,
                root_gib=10,
                host=hosts[n % 2],
                network=network,
                state=state,
                state_message="the domain disappeared from its host" if state == "error" else "",
            )
            lease_take(network_kind=network, instance=vm)
    for name, state in [("results-2026", "available"), ("scratch-space-for-the-ensemble", "in-use")]:
        Volume.objects.create(
            name=name,
            project=project,
            created_by=owner,
            kind="persistent",
            size_gib=100,
            backend="file",
            format="qcow2",
            path=f"/srv/volumes/{name}.qcow2",
            state=state,
        )
    registration_submit(
        data=RegistrationInput(
            username="marie_c",
            email="marie@example.org",
            first_name="Marie",
            last_name="Curie",
            password="Radium-Polonium-1898",
            dn="CN=Marie Curie,O=Sorbonne,C=FR",
            message="Simulations of radioactive decay chains for the isotope group; about 40 VMs at peak.",
            accept_terms=True,
        )
    )
    audit.record(staff, "compute.host.maintenance_set", hosts[2], reason="replacing a failed DIMM in slot B4")
    return {"image": image, "project": project}


# The form fields of a page that have no label a screen reader would read (name attributes, for the message).
UNLABELLED_FIELDS = """
[...document.querySelectorAll("input, select, textarea")]
  .filter(el => !["hidden", "submit", "button"].includes(el.type))
  .filter(el => el.labels.length === 0 && !el.getAttribute("aria-label") && !el.getAttribute("aria-labelledby"))
  .map(el => el.name || el.id || el.outerHTML.slice(0, 80))
"""


def _pages(world) -> dict[str, tuple[str, str]]:
    """Page name → (who looks, URL). ``""`` is an anonymous visitor."""
    from compute.models import Network

    identifier = world["image"].identifier
    network = Network.objects.get(kind="private")
    project = world["project"]
    return {
        "home": ("owner", "/"),
        "marketplace-search": ("owner", "/marketplace/"),
        "marketplace-image": ("owner", f"/marketplace/images/{identifier}/"),
        "marketplace-upload": ("owner", "/marketplace/upload/"),
        "marketplace-keys": ("owner", "/marketplace/keys/"),
        "profile": ("owner", "/accounts/profile/"),
        "volumes": ("owner", "/storage/volumes/"),
        "forbidden": ("owner", "/console/hosts/"),
        "not-found": ("owner", "/no-such-page/"),
        "login": ("", "/accounts/login/"),
        "register": ("", "/accounts/register/"),
        "password-reset": ("", "/accounts/password-reset/"),
        "console-overview": ("staff", "/console/"),
        "console-registrations": ("staff", "/accounts/console/registrations/"),
        "console-images": ("staff", "/marketplace/console/"),
        "console-image": ("staff", f"/marketplace/console/images/{identifier}/"),
        "console-policy": ("staff", "/marketplace/console/policy/"),
        "console-site-key": ("staff", "/marketplace/console/site-key/"),
        "console-hosts": ("staff", "/console/hosts/"),
        "console-networks": ("staff", "/console/networks/"),
        "console-network": ("staff", f"/console/networks/{network.pk}/?held=held"),
        "console-instance-types": ("staff", "/console/instance-types/"),
        "console-quotas": ("staff", "/accounts/console/quotas/"),
        "console-quota": ("staff", f"/accounts/console/quotas/{project.pk}/"),
        "console-instances": ("staff", "/console/instances/"),
        "console-volumes": ("staff", "/console/volumes/"),
        "console-audit": ("staff", "/console/audit/"),
    }


def test_the_main_pages_fit_a_phone_and_are_saved_as_screenshots(browser, live_server, site_world):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pages = _pages(site_world)
    overflowing, unlabelled = {}, {}
    for size, viewport in (("laptop", LAPTOP), ("phone", PHONE)):
        sessions = {who: _log_in(browser, live_server, who, viewport=viewport) for who in {"", "owner", "staff"}}
        for name, (who, url) in pages.items():
            page = sessions[who][1]
            page.goto(url)
            expect(page.locator("main h1").first).to_be_visible()
            widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            if widths[0] > widths[1]:
                overflowing[f"{name} ({size})"] = widths
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{size}.png"), full_page=True)
            if size == "laptop" and (missing := page.evaluate(UNLABELLED_FIELDS)):
                unlabelled[name] = missing
        for context, _page in sessions.values():
            context.close()
    assert overflowing == {}, f"pages wider than the window (scrollWidth, innerWidth): {overflowing}"
    assert unlabelled == {}, f"fields without a label: {unlabelled}"
    for name in pages:
        assert (SCREENSHOTS / f"{name}-laptop.png").stat().st_size > 0
        assert (SCREENSHOTS / f"{name}-phone.png").stat().st_size > 0


def test_at_a_phones_width_the_header_fits_and_a_wide_table_scrolls_in_its_own_box(browser, live_server, site_world):
    context, page = _log_in(browser, live_server, "staff", viewport=PHONE)
    page.goto("/console/instances/")
    header = page.locator("header.topbar").bounding_box()
    assert header["width"] <= PHONE["width"]
    for link in ("Marketplace", "Profile", "Console"):
        assert page.get_by_role("link", name=link, exact=True).first.is_visible()
    box = page.locator(".table-scroll").first
    scroll = box.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert scroll[0] > scroll[1]  # the table is wider than the phone: its box scrolls, the page does not
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    context.close()
