"""What every page shares: the 403/404/500 pages in the site's layout, the site's own name on the login and
password-reset pages and e-mail (never the server's address), a pending registration's login told so, the upload
page's signing steps, one date format, the favicon."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core import mail
from django.test import override_settings

from accounts.services import RegistrationInput, registration_submit
from tests.accounts.conftest import confirm_email
from tests.factories import TEST_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent.parent
PENDING_PASSWORD = "Lunar-Orbit-Paper-42"


def _pending(*, confirmed: bool):
    registration = registration_submit(
        data=RegistrationInput(
            username="ada_l",
            email="ada@example.org",
            first_name="Ada",
            last_name="Lovelace",
            password=PENDING_PASSWORD,
            accept_terms=True,
        )
    )
    if confirmed:
        confirm_email(registration.pk)
    return registration


# --- error pages -------------------------------------------------------------------------------------------


def test_a_researcher_opening_the_image_console_gets_the_403_page_in_the_sites_layout(client, owner):
    client.force_login(owner)
    answer = client.get("/marketplace/console/")
    assert answer.status_code == 403
    page = answer.content.decode()
    assert "<title>Not allowed · Altostratus</title>" in page
    assert 'class="topbar"' in page and "You are logged in as <strong>owner</strong>" in page


def test_the_404_page_is_in_the_sites_layout(client):
    answer = client.get("/no-such-page/")
    assert answer.status_code == 404
    page = answer.content.decode()
    assert "<title>Not found · Altostratus</title>" in page and 'class="topbar"' in page


def test_api_errors_stay_json(client, owner):
    answer = client.get("/api/v1/no-such-endpoint/")
    assert answer.status_code == 404 and answer.json()["code"] == "not_found"


def test_the_500_page_renders_without_the_database_in_the_sites_style(rf, django_assert_num_queries):
    from portal.views import server_error

    request = rf.get("/somewhere/")
    with django_assert_num_queries(0):
        answer = server_error(request)
    page = answer.content.decode()
    assert answer.status_code == 500
    assert "/static/css/site.css" in page and "/static/favicon.svg" in page and "Server error" in page


# --- the site's name -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/accounts/login/",
        "/accounts/password-reset/",
        "/accounts/password-reset/sent/",
        "/accounts/password-reset/done/",
    ],
)
def test_login_and_password_reset_pages_say_altostratus_not_the_servers_address(client, settings, url):
    settings.ALLOWED_HOSTS = ["portal.example.org"]
    answer = client.get(url, HTTP_HOST="portal.example.org")
    assert answer.status_code == 200
    page = answer.content.decode()
    assert answer.context["site_name"] == "Altostratus"
    assert "portal.example.org" not in page
    assert re.search(r"<title>[^<]+ · Altostratus</title>", page)


def test_the_password_reset_confirm_page_says_altostratus(client, owner):
    client.post("/accounts/password-reset/", {"email": owner.email})
    link = re.search(r"http://testserver(/accounts/password-reset/\S+/)", mail.outbox[0].body).group(1)
    answer = client.get(link, follow=True)
    assert answer.context["site_name"] == "Altostratus"
    assert "testserver" not in answer.content.decode()


def test_the_password_reset_email_names_the_site_and_links_to_it(client, owner):
    with override_settings(ALLOWED_HOSTS=["portal.example.org"]):
        client.post("/accounts/password-reset/", {"email": owner.email}, HTTP_HOST="portal.example.org")
    [message] = mail.outbox
    assert message.subject == "[Altostratus] Reset your password"
    assert 'the account "owner" on Altostratus.' in message.body
    assert "http://portal.example.org/accounts/password-reset/" in message.body


# --- logging in while the registration waits ------------------------------------------------------------------


def test_a_login_of_a_registration_waiting_for_approval_says_so(client):
    _pending(confirmed=True)
    answer = client.post("/accounts/login/", {"username": "ada_l", "password": PENDING_PASSWORD})
    page = answer.content.decode()
    assert "Your registration is still waiting for an administrator&#x27;s approval." in page
    assert "Please enter a correct username and password" not in page
    assert not answer.wsgi_request.user.is_authenticated


def test_a_login_of_a_registration_whose_address_is_unconfirmed_says_to_confirm_it(client):
    _pending(confirmed=False)
    answer = client.post("/accounts/login/", {"username": "ADA_L", "password": PENDING_PASSWORD})
    assert "waiting for you to confirm your e-mail address" in answer.content.decode()


def test_a_stranger_guessing_a_pending_username_learns_nothing(client):
    _pending(confirmed=True)
    answer = client.post("/accounts/login/", {"username": "ada_l", "password": "not-her-password"})
    page = answer.content.decode()
    assert "Please enter a correct username and password" in page
    assert "registration" not in page.split("<h1>Log in to Altostratus</h1>")[1].split("</form>")[0]


def test_a_decided_registration_logs_in_normally(client, staff):
    from accounts.services import registration_approve

    registration = _pending(confirmed=True)
    registration_approve(actor=staff, registration=registration)
    answer = client.post("/accounts/login/", {"username": "ada_l", "password": PENDING_PASSWORD}, follow=True)
    assert answer.context["user"].username == "ada_l"


# --- the upload page tells a creator how to sign ------------------------------------------------------------------


def test_the_upload_page_shows_the_alto_commands_and_the_gpg_steps_that_really_exist(client, owner):
    from alto_client.cli import alto
    from click.testing import CliRunner

    client.force_login(owner)
    page = client.get("/marketplace/upload/").content.decode()
    assert 'id="how-to-sign"' in page and "owner@example.org" in page
    assert "gpg --local-user FINGERPRINT --armor --detach-sign" in page
    assert "xmllint --c14n" in page and "http://altostratus.dev/ns/pgp#" in page
    shown = set(re.findall(r"^alto ((?:image|keys pgp) [a-z-]+)", page, flags=re.MULTILINE))
    assert {"image build-metadata", "image sign", "image validate", "image upload", "keys pgp add"} <= shown
    for command in shown:  # every command the page shows is one the client has
        result = CliRunner().invoke(alto, [*command.split(), "--help"])
        assert result.exit_code == 0, (command, result.output)


def test_the_plain_gpg_steps_make_the_bytes_the_server_verifies(tmp_path):
    """``xmllint --c14n`` of an entry is the canonical form the signature covers (DESIGN §2.2)."""
    import hashlib
    import shutil
    import subprocess

    from lxml import etree

    from marketplace import metadata

    if shutil.which("xmllint") is None:
        pytest.skip("needs xmllint (libxml2-utils)")
    content = b"an image"
    entry = tmp_path / "entry.xml"
    entry.write_bytes(
        metadata.build(
            image_bytes=len(content),
            checksums={"SHA-1": hashlib.sha1(content).hexdigest()},  # noqa: S324 - the format's identifier
            type="base",
            title="A <comment-free> title",
        )
    )
    canonical = subprocess.run(["xmllint", "--c14n", str(entry)], check=True, capture_output=True).stdout  # noqa: S603, S607
    root = etree.fromstring(entry.read_bytes())
    assert canonical == etree.tostring(root, method="c14n", with_comments=True)


# --- dates, favicon, phone -----------------------------------------------------------------------------------


def test_templates_write_dates_only_through_the_sites_named_formats():
    literal = re.compile(r'\|date:"(?!DATETIME_FORMAT"|DATE_FORMAT"|SHORT_DATE_FORMAT"|TIME_FORMAT")')
    mine = [
        path
        for path in (ROOT / "templates").rglob("*")
        if path.is_file() and path.name not in {"home.html"} and path.parent.name != "compute"
    ]
    offenders = [str(p.relative_to(ROOT)) for p in mine if literal.search(p.read_text())]
    assert offenders == []


def test_a_datetime_is_written_the_same_way_with_or_without_a_filter():
    import datetime as dt

    from django.template import Context, Template

    moment = dt.datetime(2026, 12, 1, 6, 5, tzinfo=dt.UTC)
    rendered = Template('{{ m }}|{{ m|date:"DATETIME_FORMAT" }}|{{ m|date }}').render(Context({"m": moment}))
    assert rendered == "2026-12-01 06:05|2026-12-01 06:05|2026-12-01"


def test_every_page_links_the_projects_favicon_and_it_is_served(client):
    page = client.get("/").content.decode()
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page
    svg = client.get("/static/favicon.svg")
    assert svg.status_code == 200 and b"<svg" in b"".join(svg.streaming_content)


def test_pages_offer_a_skip_link_and_label_the_navigation(client, owner):
    client.force_login(owner)
    page = client.get("/").content.decode()
    assert '<a class="skip-link" href="#content">' in page and '<main class="content" id="content">' in page
    assert '<nav class="mainnav" aria-label="Main">' in page


def test_a_wrong_password_of_a_real_account_keeps_the_usual_message(client):
    UserFactory(username="ada_l")
    answer = client.post("/accounts/login/", {"username": "ada_l", "password": "nope"})
    assert "Please enter a correct username and password" in answer.content.decode()
    assert client.post("/accounts/login/", {"username": "ada_l", "password": TEST_PASSWORD}).status_code == 302


def test_a_form_sent_without_its_csrf_token_gets_a_page_in_the_sites_style(owner):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    answer = client.post("/accounts/profile/tokens/", {"name": "x"})
    assert answer.status_code == 403
    page = answer.content.decode()
    assert "This form has expired" in page and "Nothing was changed." in page and "/static/css/site.css" in page


def test_the_django_admins_login_names_the_site(client):
    page = client.get("/admin/login/").content.decode()
    assert "Altostratus administration" in page and "Django administration" not in page
