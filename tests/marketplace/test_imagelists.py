"""HEPiX image lists (issue 16): a subscription to an S/MIME-signed ``hv:imagelist`` adds its images to the
Marketplace endorsed by the list's endorser, a newer version updates and adds images and deprecates those that
left, and everything a stranger could send instead — a changed list, a stranger's certificate, an endorser that
is not the signer, an endless download — is refused with its rule, changing nothing. The lists are signed with
a test CA (tests/marketplace/x509_ca.py) and served by a real local HTTP server."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from core.errors import ApplicationError
from core.models import AuditEntry
from marketplace import selectors, tasks
from marketplace.models import Endorser, Entry, Image, ImageListImage, ImageListSubscription, ImageListVersion
from marketplace.services import imagelists
from tests.factories import UserFactory
from tests.marketplace.imagelist_server import (
    ListImage,
    endless,
    grid_dn,
    http_server,
    imagelist,
    signed_list,
    smime_sign,
)
from tests.marketplace.x509_ca import NOW, CertificateAuthority, Credential

pytestmark = pytest.mark.django_db

MANAGER = "vo-manager@vo.example.org"
LIST_ID = "4e186b44-2c64-40ea-97d5-e9e5c0bce059"
IMAGES = "/api/v1/marketplace/images/"


@pytest.fixture(scope="module")
def grid_ca() -> CertificateAuthority:
    return CertificateAuthority.create("Test Grid CA")


@pytest.fixture(scope="module")
def rogue_ca() -> CertificateAuthority:
    """A CA with the trusted one's name but its own key: nobody trusts it."""
    return CertificateAuthority.create("Test Grid CA")


@pytest.fixture(scope="module")
def manager(grid_ca) -> Credential:
    return grid_ca.issue("VO Manager", email=MANAGER)


@pytest.fixture(autouse=True)
def trusted_cas(settings, tmp_path, grid_ca):
    settings.MARKETPLACE_X509_CA_DIR = str(grid_ca.install(tmp_path / "certificates"))


@pytest.fixture
def server():
    with http_server() as running:
        yield running


ALMA = ListImage(b"AlmaLinux 9 grid worker node image " * 100, "AlmaLinux 9 WN")
UBUNTU = ListImage(b"Ubuntu 24.04 grid user interface image " * 100, "Ubuntu 24.04 UI")
DEBIAN = ListImage(b"Debian 12 squid cache image " * 100, "Debian 12 squid")


def publish(server, credential, images, *, path="/vo.list", **fields) -> str:
    """Sign a list of ``images`` (ListImage, or a ready ``hv:image`` dict) and serve it with the images."""
    server.serve_images(*[i for i in images if isinstance(i, ListImage)])
    body = [i.as_json(server.base_url) if isinstance(i, ListImage) else i for i in images]
    server.routes[path] = signed_list(imagelist(credential, body, identifier=LIST_ID, **fields), credential)
    return server.url(path)


def state() -> tuple:
    """Everything a refused list must leave as it was."""
    return (
        Entry.objects.count(),
        Image.objects.count(),
        Endorser.objects.count(),
        ImageListVersion.objects.count(),
        ImageListImage.objects.count(),
        list(ImageListSubscription.objects.values_list("version", "list_created")),
    )


def refused(source: str, rule: str) -> None:
    before = state()
    with pytest.raises(ApplicationError) as caught:
        imagelists.imagelist_subscribe(source=source)
    assert caught.value.code == rule, caught.value
    assert state() == before


def latest(image: ListImage) -> Entry:
    return Entry.objects.get(image__identifier=image.marketplace_identifier, endorser__email=MANAGER, is_latest=True)


def searched(api, **params) -> list[str]:
    response = api.get(IMAGES, params)
    assert response.status_code == 200, response.json()
    return sorted(image["identifier"] for image in response.json()["results"])


# --- Subscribing, updating, deprecating --------------------------------------------------------------------------


def test_subscribing_to_a_list_served_over_http_adds_its_images_endorsed_by_the_lists_endorser(server, manager, api):
    source = publish(server, manager, [ALMA, UBUNTU])

    outcome = imagelists.imagelist_subscribe(source=source)

    assert outcome.change == "new"
    assert sorted(outcome.added) == sorted([ALMA.identifier, UBUNTU.identifier])
    subscription = ImageListSubscription.objects.get(source=source)
    assert (subscription.list_identifier, subscription.version, subscription.state) == (LIST_ID, "1", "active")
    entry = latest(ALMA)
    assert entry.title == "AlmaLinux 9 WN"
    assert (entry.os, entry.os_version, entry.arch, entry.format) == ("Linux", "AlmaLinux 9", "x86_64", "raw")
    assert entry.locations == [f"{server.base_url}/images/{ALMA.identifier}.img"]
    assert entry.image.bytes == len(ALMA.content)
    assert entry.image.checksums["SHA-512"] == ALMA.sha512
    # The list's endorser is the certificate that signed it, and the list's expiry is every entry's expiry.
    endorser = Endorser.objects.get(email=MANAGER)
    assert endorser.certificate_subject == manager.subject
    assert endorser.account is None
    assert entry.subject == manager.subject
    assert entry.valid_until == subscription.expires == (NOW - dt.timedelta(hours=1) + dt.timedelta(days=28))
    assert selectors.entry_status(entry) == "valid"
    # Searchable by anyone, by the list's endorser and by the list's own name for the image.
    both = sorted([ALMA.marketplace_identifier, UBUNTU.marketplace_identifier])
    assert searched(api, endorser=MANAGER) == both
    assert searched(api, q=UBUNTU.identifier) == [UBUNTU.marketplace_identifier]
    # The signed list is kept as received, for anyone to verify again.
    assert bytes(ImageListVersion.objects.get(subscription=subscription).raw) == server.routes["/vo.list"]
    assert AuditEntry.objects.filter(action="marketplace.imagelist.subscribed").count() == 1
    assert AuditEntry.objects.filter(action="marketplace.entry.imagelist").count() == 2


def test_a_newer_list_version_updates_titles_adds_images_and_deprecates_those_that_left(server, manager, api):
    source = publish(server, manager, [ALMA, UBUNTU])
    imagelists.imagelist_subscribe(source=source)
    renamed = ListImage(ALMA.content, "AlmaLinux 9.4 WN", identifier=ALMA.identifier, version="2")
    publish(server, manager, [renamed, DEBIAN], version="2", created=NOW - dt.timedelta(minutes=10))
    downloads = len(server.requests)

    outcome = imagelists.imagelist_refresh(subscription_id=ImageListSubscription.objects.get().pk)

    assert outcome.change == "updated"
    assert (outcome.added, outcome.kept, outcome.deprecated) == (
        (DEBIAN.identifier,),
        (ALMA.identifier,),
        (UBUNTU.identifier,),
    )
    assert latest(ALMA).title == "AlmaLinux 9.4 WN"
    assert Image.objects.get(identifier=ALMA.marketplace_identifier).title == "AlmaLinux 9.4 WN"
    assert latest(DEBIAN).title == "Debian 12 squid"
    gone = latest(UBUNTU)
    assert gone.deprecated
    assert LIST_ID in gone.deprecated_reason
    assert selectors.entry_status(gone) == "deprecated"
    # The kept image was not downloaded again (its UUID and SHA-512 were checked before); the new one was.
    assert server.requests[downloads:] == ["/vo.list", f"/images/{DEBIAN.identifier}.img"]
    assert searched(api, endorser=MANAGER) == sorted([ALMA.marketplace_identifier, DEBIAN.marketplace_identifier])
    assert ImageListSubscription.objects.get().version == "2"
    assert AuditEntry.objects.filter(action="marketplace.imagelist.updated").count() == 1


def test_an_image_that_comes_back_to_the_list_is_no_longer_deprecated(server, manager):
    source = publish(server, manager, [ALMA, UBUNTU])
    imagelists.imagelist_subscribe(source=source)
    publish(server, manager, [ALMA], version="2", created=NOW - dt.timedelta(minutes=30))
    imagelists.imagelist_subscribe(source=source)
    assert latest(UBUNTU).deprecated

    publish(server, manager, [ALMA, UBUNTU], version="3", created=NOW - dt.timedelta(minutes=5))
    outcome = imagelists.imagelist_subscribe(source=source)

    assert outcome.added == (UBUNTU.identifier,)
    assert not latest(UBUNTU).deprecated


def test_the_periodic_refresh_stores_a_new_version_once(server, manager):
    source = publish(server, manager, [ALMA])
    imagelists.imagelist_subscribe(source=source)
    publish(server, manager, [ALMA, DEBIAN], version="1.10", created=NOW - dt.timedelta(minutes=10))

    assert tasks.imagelists_refresh() == 1
    assert tasks.imagelists_refresh() == 0  # the same list again: nothing to do

    assert ImageListVersion.objects.count() == 2
    assert latest(DEBIAN).valid_until == NOW - dt.timedelta(minutes=10) + dt.timedelta(days=28)
    assert ImageListSubscription.objects.get().state == "active"


def test_a_list_is_subscribed_from_a_file(server, manager, tmp_path):
    server.serve_images(ALMA)
    path = tmp_path / "vo.list"
    path.write_bytes(signed_list(imagelist(manager, [ALMA.as_json(server.base_url)], identifier=LIST_ID), manager))

    call_command("subscribe_imagelist", str(path))

    assert ImageListSubscription.objects.get().source == str(path)
    assert latest(ALMA).title == "AlmaLinux 9 WN"


def test_the_command_lists_refreshes_and_unsubscribes(server, manager, capsys):
    source = publish(server, manager, [ALMA])
    call_command("subscribe_imagelist", source)
    call_command("subscribe_imagelist", "--list")
    assert f"list={LIST_ID} version=1" in capsys.readouterr().out

    call_command("subscribe_imagelist", "--refresh")
    assert "unchanged (version 1)" in capsys.readouterr().out

    call_command("subscribe_imagelist", "--unsubscribe", source)
    assert not ImageListSubscription.objects.exists()
    assert latest(ALMA).title == "AlmaLinux 9 WN"  # entries are never deleted


def test_the_command_says_which_rule_refused_a_list(server, rogue_ca):
    stranger = rogue_ca.issue("VO Manager", email=MANAGER)
    with pytest.raises(CommandError, match=r"certificate-untrusted"):
        call_command("subscribe_imagelist", publish(server, stranger, [ALMA]))


def test_a_list_signed_under_an_intermediate_ca_carrying_its_chain_is_accepted(server, grid_ca):
    intermediate = grid_ca.issue_ca("Test Grid Issuing CA")
    issued = intermediate.issue("VO Manager", email=MANAGER)
    signer = Credential(issued.certificate, issued.key, chain=(intermediate.certificate,))

    outcome = imagelists.imagelist_subscribe(source=publish(server, signer, [ALMA]))

    assert outcome.change == "new"
    assert latest(ALMA).issuer == intermediate.certificate.subject.rfc4514_string()


def test_staff_see_the_subscriptions_and_their_versions_in_the_admin_console(server, manager, admin_client):
    imagelists.imagelist_subscribe(source=publish(server, manager, [ALMA]))
    subscription = ImageListSubscription.objects.get()

    listing = admin_client.get("/admin/marketplace/imagelistsubscription/")
    page = admin_client.get(f"/admin/marketplace/imagelistsubscription/{subscription.pk}/change/")

    assert listing.status_code == page.status_code == 200
    assert LIST_ID in listing.content.decode()
    assert manager.subject in page.content.decode()


def test_a_list_image_has_its_marketplace_page_with_the_lists_endorser(server, manager, client):
    imagelists.imagelist_subscribe(source=publish(server, manager, [ALMA]))

    image_page = client.get(f"/marketplace/images/{ALMA.marketplace_identifier}/")
    entry = latest(ALMA)
    entry_page = client.get(f"/marketplace/entries/{ALMA.marketplace_identifier}/{MANAGER}/{entry.created_text}/")

    assert image_page.status_code == entry_page.status_code == 200
    assert "AlmaLinux 9 WN" in image_page.content.decode()
    assert MANAGER in image_page.content.decode()
    assert ALMA.identifier in entry_page.content.decode()  # the list's UUID, as dcterms:alternative


def test_the_refresh_runs_every_configured_period_as_a_celery_task(settings):
    from portal.celery import app

    schedule = settings.CELERY_BEAT_SCHEDULE["marketplace.imagelists_refresh"]
    assert schedule["task"] == "marketplace.imagelists_refresh"
    assert schedule["schedule"] == float(settings.MARKETPLACE_IMAGELIST_REFRESH_SECONDS)
    assert app.tasks["marketplace.imagelists_refresh"].name == tasks.imagelists_refresh.name


# --- Replays and refused refreshes --------------------------------------------------------------------------------


def test_an_older_or_equal_version_is_refused_as_a_replay_and_the_images_stay(server, manager):
    source = publish(server, manager, [ALMA, UBUNTU], version="2", created=NOW - dt.timedelta(minutes=10))
    imagelists.imagelist_subscribe(source=source)
    before = state()

    for version, created in (("1", NOW - dt.timedelta(hours=1)), ("2", NOW - dt.timedelta(minutes=5))):
        publish(server, manager, [ALMA], version=version, created=created)
        outcome = imagelists.imagelist_refresh(subscription_id=ImageListSubscription.objects.get().pk)
        assert (outcome.change, outcome.code) == ("refused", "list-replayed")
    # A newer version number with an older creation date is a replay too.
    publish(server, manager, [ALMA], version="3", created=NOW - dt.timedelta(hours=2))
    assert imagelists.imagelist_refresh(subscription_id=ImageListSubscription.objects.get().pk).code == "list-replayed"

    assert state()[:5] == before[:5]
    subscription = ImageListSubscription.objects.get()
    assert (subscription.state, subscription.error_code, subscription.version) == ("error", "list-replayed", "2")
    assert not latest(UBUNTU).deprecated
    assert AuditEntry.objects.filter(action="marketplace.imagelist.refused").count() == 3


def test_a_subscription_in_error_recovers_with_the_next_good_list(server, manager):
    source = publish(server, manager, [ALMA])
    imagelists.imagelist_subscribe(source=source)
    server.routes["/vo.list"] = b"not a list"
    assert imagelists.imagelist_refresh(subscription_id=ImageListSubscription.objects.get().pk).change == "refused"

    publish(server, manager, [ALMA, DEBIAN], version="2", created=NOW - dt.timedelta(minutes=1))
    tasks.imagelists_refresh()

    subscription = ImageListSubscription.objects.get()
    assert (subscription.state, subscription.error_code, subscription.version) == ("active", "", "2")


def test_a_list_from_another_identifier_at_the_same_source_is_refused(server, manager):
    source = publish(server, manager, [ALMA])
    imagelists.imagelist_subscribe(source=source)
    document = imagelist(
        manager, [ALMA.as_json(server.base_url)], identifier=str(uuid.uuid4()), version="2", created=NOW
    )
    server.routes["/vo.list"] = signed_list(document, manager)

    outcome = imagelists.imagelist_refresh(subscription_id=ImageListSubscription.objects.get().pk)

    assert outcome.code == "list-identifier-changed"


def test_a_renewed_certificate_of_the_same_endorser_goes_on_with_the_subscription(server, grid_ca, manager):
    source = publish(server, manager, [ALMA, UBUNTU])
    imagelists.imagelist_subscribe(source=source)
    renewed = grid_ca.issue("VO Manager", email=MANAGER)  # same DN and e-mail, a new key and serial
    publish(server, renewed, [ALMA], version="2", created=NOW - dt.timedelta(minutes=5))

    outcome = imagelists.imagelist_subscribe(source=source)

    assert outcome.deprecated == (UBUNTU.identifier,)
    assert ImageListVersion.objects.order_by("created").last().fingerprint != (
        ImageListVersion.objects.order_by("created").first().fingerprint
    )


def test_a_list_taken_over_by_another_endorser_is_refused(server, grid_ca, manager):
    source = publish(server, manager, [ALMA])
    imagelists.imagelist_subscribe(source=source)
    successor = grid_ca.issue("New VO Manager", email="new-manager@vo.example.org")
    publish(server, successor, [ALMA], version="2", created=NOW, email="new-manager@vo.example.org")

    outcome = imagelists.imagelist_refresh(subscription_id=ImageListSubscription.objects.get().pk)

    assert outcome.code == "endorser-changed"
    assert ImageListVersion.objects.count() == 1


# --- Hostile lists: the signature ----------------------------------------------------------------------------------


def test_a_list_changed_after_it_was_signed_is_refused(server, manager):
    source = publish(server, manager, [ALMA])
    server.routes["/vo.list"] = server.routes["/vo.list"].replace(b"AlmaLinux 9 WN", b"AlmaLinux 9 XX")
    refused(source, "bad-signature")


def test_a_list_signed_by_a_certificate_of_an_untrusted_ca_is_refused(server, rogue_ca):
    refused(publish(server, rogue_ca.issue("VO Manager", email=MANAGER), [ALMA]), "certificate-untrusted")


def test_a_list_signed_with_an_expired_certificate_is_refused(server, grid_ca):
    expired = grid_ca.issue(
        "VO Manager", email=MANAGER, not_before=NOW - dt.timedelta(days=400), not_after=NOW - dt.timedelta(days=1)
    )
    refused(publish(server, expired, [ALMA], created=NOW - dt.timedelta(days=2)), "certificate-expired")


def test_a_list_signed_with_a_revoked_certificate_is_refused(server, grid_ca, settings, tmp_path):
    revoked = grid_ca.issue("VO Manager", email=MANAGER)
    grid_ca.revoke(revoked)
    try:
        settings.MARKETPLACE_X509_CA_DIR = str(grid_ca.install(tmp_path / "with-crl"))
        refused(publish(server, revoked, [ALMA]), "certificate-revoked")
    finally:
        grid_ca.revoked.remove(revoked.certificate)


def test_a_list_signed_by_two_certificates_is_refused(server, manager, grid_ca):
    document = imagelist(manager, [ALMA.as_json(server.base_url)], identifier=LIST_ID)
    server.serve_images(ALMA)
    other = grid_ca.issue("Someone Else", email="else@vo.example.org")
    server.routes["/vo.list"] = smime_sign(json.dumps(document).encode(), manager, also=other)
    refused(server.url("/vo.list"), "signature-malformed")


def test_an_opaque_signed_list_is_read_as_well(server, manager):
    server.serve_images(ALMA)
    document = imagelist(manager, [ALMA.as_json(server.base_url)], identifier=LIST_ID)
    server.routes["/vo.list"] = smime_sign(json.dumps(document).encode(), manager, detached=False)
    assert b"application/pkcs7-mime" in server.routes["/vo.list"][:300].lower()

    assert imagelists.imagelist_subscribe(source=server.url("/vo.list")).added == (ALMA.identifier,)


def test_a_list_signed_in_text_mode_is_read_without_its_text_header(server, manager):
    server.serve_images(ALMA)
    document = imagelist(manager, [ALMA.as_json(server.base_url)], identifier=LIST_ID)
    server.routes["/vo.list"] = smime_sign(json.dumps(document).encode(), manager, text=True)

    assert imagelists.imagelist_subscribe(source=server.url("/vo.list")).added == (ALMA.identifier,)


def test_an_opaque_list_changed_after_it_was_signed_is_refused(server, manager):
    document = imagelist(manager, [ALMA.as_json(server.base_url)], identifier=LIST_ID)
    signed = smime_sign(json.dumps(document).encode(), manager, detached=False)
    head, _, body = signed.partition(b"\r\n\r\n")
    der = bytearray(base64.b64decode(body))
    at = bytes(der).index(b"AlmaLinux 9 WN")
    der[at] ^= 0x01  # one bit of the signed content, inside the signature's own structure
    server.routes["/vo.list"] = head + b"\r\n\r\n" + base64.encodebytes(bytes(der))
    refused(server.url("/vo.list"), "bad-signature")


def test_an_image_size_beyond_what_the_database_holds_is_refused(server, manager):
    refused(publish(server, manager, [ALMA.as_json(server.base_url, **{"hv:size": 2**64})]), "list-malformed")


def test_a_body_that_is_not_an_smime_message_is_refused(server):
    server.routes["/vo.list"] = json.dumps({"hv:imagelist": {}}).encode()
    refused(server.url("/vo.list"), "signature-malformed")


def test_a_signed_body_that_is_not_json_is_refused(server, manager):
    server.routes["/vo.list"] = smime_sign(b"<imagelist>not json</imagelist>", manager)
    refused(server.url("/vo.list"), "list-not-json")


def test_no_list_is_accepted_while_the_site_trusts_no_ca(server, manager, settings, tmp_path):
    settings.MARKETPLACE_X509_CA_DIR = str(tmp_path / "none")
    refused(publish(server, manager, [ALMA]), "certificate-untrusted")


# --- Hostile lists: the endorser -----------------------------------------------------------------------------------


def test_a_list_whose_dn_is_not_the_signers_is_refused(server, manager):
    refused(publish(server, manager, [ALMA], dn="/C=FR/O=Altostratus Test Grid/CN=Someone Else"), "subject-mismatch")


def test_a_list_whose_ca_is_not_the_signers_issuer_is_refused(server, manager):
    refused(publish(server, manager, [ALMA], ca="/C=FR/O=Altostratus Test Grid/CN=Other CA"), "issuer-mismatch")


def test_a_list_whose_email_is_not_on_the_signers_certificate_is_refused(server, manager):
    refused(publish(server, manager, [ALMA], email="someone@vo.example.org"), "email-not-on-certificate")


def test_a_list_cannot_take_an_endorser_email_that_an_account_holds(server, grid_ca, owner, registered, entry_for):
    from marketplace import services

    registered(owner, "owner")
    services.entry_upload(raw=entry_for("owner"), uploader=owner)  # owner's e-mail endorses through owner's key
    impostor = grid_ca.issue("Creator Impostor", email=owner.email)
    refused(publish(server, impostor, [ALMA], email=owner.email), "endorser-taken")


def test_a_list_cannot_take_an_endorser_email_that_another_certificate_holds(server, grid_ca, manager):
    imagelists.imagelist_subscribe(source=publish(server, manager, [ALMA]))
    second = grid_ca.issue("Another Manager", email=MANAGER)  # a second certificate carrying the same e-mail
    refused(publish(server, second, [UBUNTU], path="/other.list"), "endorser-taken")


def test_a_list_cannot_endorse_as_the_site(server, grid_ca, settings):
    site = grid_ca.issue("Site Impostor", email=settings.MARKETPLACE_SITE_KEY_EMAIL)
    refused(publish(server, site, [ALMA], email=settings.MARKETPLACE_SITE_KEY_EMAIL), "email-not-owner")


# --- Hostile lists: the content ------------------------------------------------------------------------------------


def test_a_list_that_expired_is_refused(server, manager):
    created = NOW - dt.timedelta(days=30)
    refused(publish(server, manager, [ALMA], created=created, expires=NOW - dt.timedelta(days=1)), "list-expired")


def test_a_list_created_in_the_future_is_refused(server, manager):
    refused(publish(server, manager, [ALMA], created=NOW + dt.timedelta(days=1)), "created-in-future")


def test_a_list_naming_one_image_identifier_twice_is_refused(server, manager):
    twin = ListImage(UBUNTU.content, "Twin", identifier=ALMA.identifier)
    server.serve_images(twin)
    refused(publish(server, manager, [ALMA, twin.as_json(server.base_url)]), "duplicate-image")


def test_a_list_naming_the_same_bytes_twice_is_refused(server, manager):
    copy = ListImage(ALMA.content, "Copy of Alma")
    refused(publish(server, manager, [ALMA, copy]), "duplicate-image")


def test_an_image_whose_bytes_do_not_have_the_signed_checksum_is_refused(server, manager):
    source = publish(server, manager, [ALMA])
    server.routes[f"/images/{ALMA.identifier}.img"] = b"Y" * len(ALMA.content)
    refused(source, "image-checksum-mismatch")


def test_an_image_larger_than_its_size_is_not_read_past_it(server, manager):
    source = publish(server, manager, [ALMA])
    server.routes[f"/images/{ALMA.identifier}.img"] = endless
    refused(source, "image-too-large")


def test_an_image_on_a_file_uri_is_refused(server, manager):
    refused(
        publish(server, manager, [ALMA.as_json(server.base_url, **{"hv:uri": "file:///etc/shadow"})]), "list-malformed"
    )


def test_a_never_ending_list_is_not_read_past_the_limit(server, settings):
    settings.MARKETPLACE_IMAGELIST_MAX_BYTES = 256 * 1024
    server.routes["/vo.list"] = endless
    refused(server.url("/vo.list"), "too-large")


def test_a_list_announcing_a_huge_body_is_refused_before_it_is_read(server, manager, settings):
    settings.MARKETPLACE_IMAGELIST_MAX_BYTES = 4096
    refused(publish(server, manager, [ALMA, UBUNTU, DEBIAN]), "too-large")


def test_a_list_that_redirects_out_of_http_is_refused(server):
    def to_file(handler):
        handler.send_response(302)
        handler.send_header("Location", "file:///etc/passwd")
        handler.end_headers()

    server.routes["/vo.list"] = to_file
    refused(server.url("/vo.list"), "redirect-refused")


def test_a_server_that_never_answers_is_given_up_on(server, settings):
    settings.MARKETPLACE_IMAGELIST_IO_TIMEOUT = 1
    answered = threading.Event()

    def silent(handler):
        answered.wait(10)  # released when the test ends

    server.routes["/vo.list"] = silent
    try:
        refused(server.url("/vo.list"), "timeout")
    finally:
        answered.set()


def test_an_unreachable_list_is_refused_with_its_rule(server):
    refused(server.url("/missing.list"), "unreachable")


def test_a_source_that_is_neither_a_url_nor_a_file_is_refused():
    with pytest.raises(ApplicationError) as caught:
        imagelists.imagelist_subscribe(source="ftp://vo.example.org/vo.list")
    assert caught.value.code == "scheme-refused"
    assert not ImageListSubscription.objects.exists()


def test_an_account_holder_is_not_needed_to_subscribe_and_the_actor_is_audited(server, manager):
    admin = UserFactory(username="gridadmin", is_staff=True)
    imagelists.imagelist_subscribe(source=publish(server, manager, [ALMA]), actor=admin)
    assert ImageListSubscription.objects.get().subscribed_by == admin
    assert AuditEntry.objects.get(action="marketplace.imagelist.subscribed").actor == admin


def test_the_list_format_names_what_is_missing(manager):
    from marketplace import imagelists as fmt

    document = imagelist(manager, [ALMA.as_json("http://h")], identifier=LIST_ID)
    del document["hv:imagelist"]["hv:endorser"]
    with pytest.raises(fmt.ImageListInvalid, match="hv:endorser"):
        fmt.parse(json.dumps(document).encode())
    assert fmt.version_key("1.10") > fmt.version_key("1.9")
    assert grid_dn("CN=Jo,O=Lab,C=FR") == "/C=FR/O=Lab/CN=Jo"
