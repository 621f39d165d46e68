"""The portal in a real browser."""

from __future__ import annotations

import pytest

from tests.factories import TEST_PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_researcher_logs_in_through_the_login_page_and_sees_the_welcome(page, owner):
    page.goto("/")
    page.get_by_role("link", name="Log in").first.click()
    page.get_by_label("Username").fill("owner")
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")
    assert page.locator(".who").inner_text() == "owner"
    assert page.get_by_text("Log out").is_visible()
    # The stylesheet came from our own static files.
    background = page.evaluate("getComputedStyle(document.querySelector('.topbar')).backgroundColor")
    assert background == "rgb(255, 255, 255)"


def test_a_wrong_password_is_shown_on_the_page(page, owner):
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("owner")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_text("Please enter a correct username and password").is_visible()


def _csp_violations(page) -> list[str]:
    """Collects what the browser refused under the Content-Security-Policy, from the console and the DOM event."""
    violations: list[str] = []
    page.on("console", lambda message: "Content Security Policy" in message.text and violations.append(message.text))
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) =>"
        " console.error('Content Security Policy violation: ' + e.violatedDirective + ' ' + e.blockedURI));"
    )
    return violations


def test_the_api_docs_and_the_marketplace_search_run_under_the_csp_without_violations(page, owner):
    violations = _csp_violations(page)
    response = page.goto("/api/v1/docs/")
    assert "script-src 'self' 'nonce-" in response.headers["content-security-policy"]
    # Swagger UI ran: it fetched the schema and drew the operations.
    page.locator(".opblock").first.wait_for(timeout=20_000)
    assert page.locator(".opblock").count() > 10
    response = page.goto("/marketplace/")
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    page.get_by_role("button", name="Search").first.click()
    page.wait_for_load_state("networkidle")
    assert violations == []
