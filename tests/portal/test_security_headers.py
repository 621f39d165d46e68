"""The Content-Security-Policy and the other browser hardening headers, on pages and API answers alike."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.django_db

POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "object-src": "'none'",
    "base-uri": "'self'",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
}


def directives(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


@pytest.mark.parametrize(
    "url", ["/", "/marketplace/", "/accounts/login/", "/accounts/register/", "/api/v1/", "/api/v1/marketplace/images/"]
)
def test_pages_and_api_answers_carry_the_site_policy(client, url):
    response = client.get(url)
    assert response.status_code == 200
    assert directives(response) == POLICY
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_errors_carry_the_policy_too(client):
    assert directives(client.get("/no-such-page/")) == POLICY
    assert directives(client.get("/api/v1/no-such-thing/")) == POLICY


def test_the_api_docs_allow_only_their_own_inline_script_by_nonce(client):
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200
    script_src = directives(response)["script-src"]
    nonce = re.fullmatch(r"'self' 'nonce-([^']+)'", script_src).group(1)
    html = response.content.decode()
    inline_scripts = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>", html)
    assert inline_scripts == [f' nonce="{nonce}"']
    assert "<style" not in html
    # A fresh nonce for every answer.
    assert directives(client.get("/api/v1/docs/"))["script-src"] != script_src


def test_no_template_holds_inline_script_handlers_or_styles():
    offenders = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        name = path.relative_to(ROOT / "templates").as_posix()
        text = path.read_text()
        inline_script = re.search(r"<script(?![^>]*\b(src|type=\"application/json\")=?)[^>]*>", text)
        nonce_script = re.search(r"<script nonce=\"\{\{ request\.csp_nonce \}\}\">", text)
        handler = re.search(r"\son[a-z]+\s*=", text)
        style = re.search(r"<style|\sstyle\s*=", text)
        if (inline_script and not nonce_script) or handler or style:
            offenders.append(name)
    assert offenders == []
