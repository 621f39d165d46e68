"""The creator's journey in a real browser: register a key, upload a signed file, find the image."""

from __future__ import annotations

import pytest

from tests.factories import TEST_PASSWORD
from tests.marketplace.conftest import IMAGE

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_creator_registers_a_key_uploads_an_entry_and_finds_the_image(page, owner, keyring, entry_for, tmp_path):
    signed = tmp_path / "ubuntu-24.04.xml"
    signed.write_bytes(entry_for("owner"))

    page.goto("/accounts/login/?next=/marketplace/keys/")
    page.get_by_label("Username").fill("owner")
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/marketplace/keys/")

    page.get_by_label("Public key").fill(keyring["owner"].armored)
    page.get_by_role("button", name="Register key").click()
    assert page.get_by_text(f"Key {keyring['owner'].fingerprint} registered.").is_visible()
    assert page.locator("td code", has_text=keyring["owner"].fingerprint).is_visible()

    page.get_by_role("link", name="Upload an entry").click()
    page.get_by_label("Signed metadata file").set_input_files(str(signed))
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(f"**/marketplace/entries/{IMAGE.identifier}/**")
    assert page.get_by_text("uploaded.").is_visible()

    page.get_by_role("link", name="Marketplace", exact=True).click()
    page.get_by_label("OS", exact=True).fill("ubuntu")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="Ubuntu 24.04 LTS").click()
    page.wait_for_url(f"**/marketplace/images/{IMAGE.identifier}/")
    assert page.locator("#current-count").inner_text() == "1"
    assert page.locator(".badge.valid").first.inner_text() == "valid"
