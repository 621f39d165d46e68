"""Image list refreshes racing on PostgreSQL: the subscription's row lock stores each list version once, however
many workers read the same new version at the same moment (the periodic task and the command, say)."""

from __future__ import annotations

import datetime as dt

import pytest

from marketplace.models import Entry, ImageListImage, ImageListSubscription, ImageListVersion
from marketplace.services import imagelists
from tests.marketplace.imagelist_server import ListImage, http_server, imagelist, signed_list
from tests.marketplace.x509_ca import NOW, CertificateAuthority
from tests.race import race

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

LIST_ID = "4e186b44-2c64-40ea-97d5-e9e5c0bce059"
MANAGER = "vo-manager@vo.example.org"


def test_three_refreshes_of_one_new_version_at_once_store_it_once(settings, tmp_path):
    ca = CertificateAuthority.create("Race Grid CA")
    settings.MARKETPLACE_X509_CA_DIR = str(ca.install(tmp_path / "certificates"))
    manager = ca.issue("VO Manager", email=MANAGER)
    alma, debian = ListImage(b"alma " * 500, "Alma"), ListImage(b"debian " * 500, "Debian")
    with http_server() as server:
        server.serve_images(alma, debian)

        def publish(images, version, created):
            body = [i.as_json(server.base_url) for i in images]
            document = imagelist(manager, body, identifier=LIST_ID, version=version, created=created)
            server.routes["/vo.list"] = signed_list(document, manager)

        publish([alma], "1", NOW - dt.timedelta(hours=1))
        subscription = imagelists.imagelist_subscribe(source=server.url("/vo.list")).subscription
        publish([debian], "2", NOW - dt.timedelta(minutes=1))

        outcomes = race([lambda: imagelists.imagelist_refresh(subscription_id=subscription.pk)] * 3)

    changes = sorted(o.change for o in outcomes if isinstance(o, imagelists.Refresh))
    assert changes == ["unchanged", "unchanged", "updated"], outcomes
    assert ImageListVersion.objects.count() == 2
    assert Entry.objects.filter(endorser__email=MANAGER).count() == 3  # alma, debian, alma deprecated
    assert ImageListImage.objects.filter(list_version__version="2").count() == 2
    assert ImageListSubscription.objects.get().version == "2"
