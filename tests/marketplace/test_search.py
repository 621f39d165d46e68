"""Image search (DESIGN §6): every filter, the status and location filters, ordering, anonymous reads."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from marketplace import services
from tests.marketplace.conftest import T0, Image

pytestmark = pytest.mark.django_db

IMAGES = "/api/v1/marketplace/images/"
HOUR = dt.timedelta(hours=1)
UBUNTU = Image(b"ubuntu")
DEBIAN = Image(b"debian")
ALMA = Image(b"alma")
SCRATCH = Image(b"scratch disk")
OLD = Image(b"old centos")


@pytest.fixture
def catalogue(owner, staff, registered, entry_for):
    """Five images from two endorsers; one expired in 2025, one deprecated, one disk without location."""
    registered(owner, "owner")
    registered(staff, "staff")

    def put(name, user, image, at, **fields):
        services.entry_upload(raw=entry_for(name, image=image, at=at, **fields), uploader=user)

    put("owner", owner, UBUNTU, T0, title="Ubuntu 24.04 LTS", description="Noble Numbat with cloud-init", os="Ubuntu")
    put("owner", owner, DEBIAN, T0 + HOUR, title="Debian 12", description="Bookworm", os="Debian", os_version="12")
    put("staff", staff, ALMA, T0 + 2 * HOUR, title="AlmaLinux 9", os="AlmaLinux", os_version="9.3", os_arch="aarch64")
    put(
        "owner",
        owner,
        SCRATCH,
        T0 + 3 * HOUR,
        title="Scratch volume",
        os="",
        os_version="",
        os_arch="",
        kind="disk",
        format="raw",
        locations=(),
    )
    put("owner", owner, OLD, T0 - HOUR, title="CentOS 7", os="CentOS", os_version="7", valid=T0 + 24 * HOUR)
    put("staff", staff, UBUNTU, T0 + 4 * HOUR, deprecated="Superseded by 24.04.1", title="Ubuntu 24.04 LTS")


def found(client, **params) -> list[str]:
    response = client.get(IMAGES, params)
    assert response.status_code == 200, response.json()
    return [image["identifier"] for image in response.json()["results"]]


def ids(*images: Image) -> list[str]:
    return [image.identifier for image in images]


@pytest.fixture
def search(catalogue, api):
    def run(**params) -> list[str]:
        return found(api, **params)

    return run


def test_anonymous_users_search_and_the_default_is_valid_images_newest_first(search):
    assert search() == ids(UBUNTU, SCRATCH, ALMA, DEBIAN)  # OLD expired; UBUNTU still valid by owner


def test_q_looks_in_titles_and_descriptions_ignoring_case(search):
    assert search(q="numbat") == ids(UBUNTU)
    assert search(q="DEBIAN") == ids(DEBIAN)
    assert search(q="no such words") == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"os": "ubuntu"}, [UBUNTU]),
        ({"os": "Debian", "os_version": "12"}, [DEBIAN]),
        ({"os_version": "9.3"}, [ALMA]),
        ({"arch": "AARCH64"}, [ALMA]),
        ({"arch": "x86_64"}, [UBUNTU, DEBIAN]),
        ({"kind": "disk"}, [SCRATCH]),
        ({"kind": "machine", "arch": "aarch64"}, [ALMA]),
        ({"endorser": "security@example.org"}, [ALMA]),  # staff's Ubuntu entry is deprecated
        ({"endorser": "CREATOR@example.org"}, [UBUNTU, SCRATCH, DEBIAN]),
        ({"location": "none"}, [SCRATCH]),
        ({"location": "web"}, [UBUNTU, ALMA, DEBIAN]),
    ],
    ids=lambda value: "-".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else "",
)
def test_each_filter_narrows_the_results(search, params, expected):
    assert search(**params) == ids(*expected)


def test_endorser_may_be_given_by_key_fingerprint(search, keyring):
    assert search(endorser=keyring["staff"].fingerprint) == ids(ALMA)
    assert search(endorser=keyring["staff"].fingerprint.lower(), status="all") == ids(UBUNTU, ALMA)


def test_all_filters_must_hold_for_the_same_endorsers_entry(search):
    # Ubuntu is valid (owner) and deprecated (staff): "staff + valid" must not match it through the owner.
    assert search(endorser="security@example.org", os="Ubuntu") == []
    assert search(endorser="security@example.org", os="Ubuntu", status="deprecated") == ids(UBUNTU)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("valid", [UBUNTU, SCRATCH, ALMA, DEBIAN]),
        ("expired", [OLD]),
        ("deprecated", [UBUNTU]),
        ("revoked", []),
        ("all", [UBUNTU, SCRATCH, ALMA, DEBIAN, OLD]),
    ],
)
def test_status_filter(search, status, expected):
    assert search(status=status) == ids(*expected)


def test_revoked_status_finds_entries_of_revoked_keys(search, keyring, staff):
    services.pgp_key_revoke(actor=staff, fingerprint=keyring["staff"].fingerprint)
    assert search(status="revoked") == ids(UBUNTU, ALMA)
    assert search() == ids(UBUNTU, SCRATCH, DEBIAN)


@pytest.mark.parametrize(
    ("ordering", "expected"),
    [
        ("-updated", [UBUNTU, SCRATCH, ALMA, DEBIAN, OLD]),
        ("updated", [OLD, DEBIAN, ALMA, SCRATCH, UBUNTU]),
        ("title", [ALMA, OLD, DEBIAN, SCRATCH, UBUNTU]),
        ("-title", [UBUNTU, SCRATCH, DEBIAN, OLD, ALMA]),
        ("bytes", None),
        ("identifier", None),
    ],
)
def test_ordering(search, ordering, expected):
    results = search(status="all", ordering=ordering)
    if ordering == "bytes":
        sizes = {i.identifier: len(i.content) for i in (UBUNTU, DEBIAN, ALMA, SCRATCH, OLD)}
        assert [sizes[r] for r in results] == sorted(sizes[r] for r in results)
    elif ordering == "identifier":
        assert results == sorted(results)
    else:
        assert results == ids(*expected)


def test_an_image_is_as_recent_as_its_newest_entry_from_any_endorser(catalogue, api):
    body = api.get(f"{IMAGES}{UBUNTU.identifier}/").json()
    assert body["updated"] == "2024-01-01T16:00:00Z"  # the staff's deprecation, T0 + 4h
    assert body["first_endorsed"] == "2024-01-01T12:00:00Z"


@pytest.mark.parametrize("params", [{"status": "bogus"}, {"kind": "vm"}, {"location": "ftp"}, {"ordering": "size"}])
def test_bad_filter_values_are_refused_naming_the_field(catalogue, api, params):
    response = api.get(IMAGES, params)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{next(iter(params))}: ")


def test_results_carry_each_endorsers_latest_entry_with_status(search, api):
    body = api.get(IMAGES, {"os": "ubuntu"}).json()
    (image,) = body["results"]
    assert image["current_endorsements"] == 1
    assert {(e["endorser"], e["status"]) for e in image["endorsements"]} == {
        ("creator@example.org", "valid"),
        ("security@example.org", "deprecated"),
    }


def test_search_runs_a_fixed_number_of_queries_whatever_the_page_holds(catalogue, api):
    with CaptureQueriesContext(connection) as few:
        api.get(IMAGES, {"page_size": 1, "status": "all"})
    with CaptureQueriesContext(connection) as more:
        api.get(IMAGES, {"page_size": 4, "status": "all"})
    # Elsewhere: page, count, the page's latest entries. On PostgreSQL: what the planner expects (two quick queries),
    # then the page rendered with its latest entries, and the count unless the page's query gave it (which depends
    # on the table statistics other tests left).
    postgres = connection.vendor == "postgresql"
    assert len(few) == len(more) and len(few) in ({3, 4} if postgres else {3})
    with CaptureQueriesContext(connection) as whole:
        body = api.get(IMAGES, {"page_size": 50, "status": "all"}).json()
    assert len(whole) == (3 if postgres else 2) and body["count"] == 5  # a whole first page is its own count


def test_image_detail_lists_every_endorsers_latest_entry(catalogue, api):
    body = api.get(f"{IMAGES}{UBUNTU.identifier}/").json()
    assert [e["endorser"] for e in body["endorsements"]] == ["creator@example.org", "security@example.org"]
    assert api.get(f"{IMAGES}AAAAAAAAAAAAAAAAAAAAAAAAAAA/").status_code == 404


def test_endorsers_list_and_history(catalogue, api):
    with CaptureQueriesContext(connection) as queries:
        body = api.get("/api/v1/marketplace/endorsers/").json()
    assert len(queries) == 2
    rows = {e["email"]: e for e in body["results"]}
    assert rows["creator@example.org"]["entry_count"] == 4
    assert rows["creator@example.org"]["image_count"] == 4
    assert rows["security@example.org"]["entry_count"] == 2
    history = api.get("/api/v1/marketplace/endorsers/security@example.org/").json()
    assert [(e["identifier"], e["status"]) for e in history["results"]] == [
        (UBUNTU.identifier, "deprecated"),
        (ALMA.identifier, "valid"),
    ]
    only = api.get("/api/v1/marketplace/endorsers/security@example.org/", {"identifier": ALMA.identifier}).json()
    assert [e["identifier"] for e in only["results"]] == [ALMA.identifier]
    assert api.get("/api/v1/marketplace/endorsers/nobody@example.org/").status_code == 404
    assert [e["email"] for e in api.get("/api/v1/marketplace/endorsers/", {"q": "SECURITY"}).json()["results"]] == [
        "security@example.org"
    ]


def test_endorser_history_runs_a_fixed_number_of_queries(catalogue, api):
    with CaptureQueriesContext(connection) as queries:
        api.get("/api/v1/marketplace/endorsers/creator@example.org/")
    assert len(queries) == 3  # the endorser, count, page (key, image, endorser joined)


def test_the_fast_entry_rendering_matches_the_declared_fields(catalogue):
    from rest_framework import serializers

    from marketplace.api import EntrySummarySerializer
    from marketplace.models import Entry

    for entry in Entry.objects.select_related("image", "endorser", "key"):
        rendered = EntrySummarySerializer(entry)
        assert rendered.data == serializers.ModelSerializer.to_representation(rendered, entry)


@pytest.mark.parametrize("page", ["99999999999999999999", "9223372036854775807", "²", "0", "-1", "x"])
def test_a_page_number_no_search_can_reach_is_a_missing_page_not_a_server_error(catalogue, api, page):
    response = api.get(IMAGES, {"status": "all", "page": page})
    assert response.status_code == 404
    assert response.json()["detail"] == "Invalid page."


def test_search_pages_reach_a_window_of_images_and_a_deeper_page_is_refused(catalogue, api, client, monkeypatch):
    """Deep pages would gather and sort every match (seconds at a million entries, for any stranger): a search shows
    its first ``SEARCH_WINDOW`` images, and says so past them."""
    from marketplace import selectors

    monkeypatch.setattr(selectors, "SEARCH_WINDOW", 3)
    last = api.get(IMAGES, {"status": "all", "page_size": 2, "page": 2}).json()
    assert len(last["results"]) == 1 and last["next"] is None  # the window's last page: 3 of the 5 images
    deeper = api.get(IMAGES, {"status": "all", "page_size": 2, "page": 3})
    assert deeper.status_code == 400
    assert deeper.json()["code"] == "search-too-deep"
    assert "Search pages reach the first 3 images; narrow the search" in deeper.json()["detail"]
    html = client.get("/marketplace/", {"status": "all", "page": 2}).content.decode()
    assert "Search pages reach the first 3 images; narrow the search" in html
