"""A gpg that cannot run is a transient fault of the adapter, which the services answer with 503 (never 500),
changing nothing; gpg's refusals stay 400s with their codes."""

from __future__ import annotations

from collections.abc import Iterator
from unittest import mock

import pytest

from core.errors import ApplicationError, PermanentError, TransientError, Unavailable
from marketplace import services, signing
from marketplace.models import Entry, PgpKey
from marketplace.signing import gpg

pytestmark = pytest.mark.django_db

KEYS = "/api/v1/accounts/pgp-keys/"
ENTRIES = "/api/v1/marketplace/entries/"


@pytest.fixture
def gpg_missing() -> Iterator[mock.MagicMock]:
    """The adapter looks for gpg where there is none (an uninstalled or broken gnupg package)."""
    with mock.patch.object(gpg, "gpg_binary", autospec=True, return_value="/nonexistent/bin/gpg") as lookup:
        yield lookup


def test_the_adapter_says_gpg_could_not_run_as_a_transient_error_not_an_application_error(keyring, gpg_missing):
    with pytest.raises(signing.GpgUnavailable) as failed:
        signing.key_inspect(keyring["owner"].armored)
    assert isinstance(failed.value, TransientError) and not isinstance(failed.value, ApplicationError)
    assert failed.value.code == "gpg-unavailable"
    assert "/nonexistent/bin/gpg" in str(failed.value)
    gpg_missing.assert_called()


def test_the_adapters_refusals_are_permanent_errors_not_application_errors():
    with pytest.raises(signing.SigningRefused) as refused:
        signing.key_inspect("not a key")
    assert isinstance(refused.value, PermanentError) and not isinstance(refused.value, ApplicationError)
    assert refused.value.code == "pgp-key-invalid"


def test_a_gpg_tool_that_does_not_finish_in_time_is_a_transient_error(monkeypatch):
    monkeypatch.setattr(gpg, "GPG_TIMEOUT_SECONDS", 0.2)
    with pytest.raises(signing.GpgUnavailable):
        gpg.gpg_run(["sleep", "5"])


def test_registering_a_key_while_gpg_cannot_run_is_a_503_and_registers_nothing(owner, keyring, api_as, gpg_missing):
    response = api_as(owner).post(KEYS, {"armored": keyring["owner"].armored}, format="json")
    assert response.status_code == 503, response.json()
    assert response.json()["code"] == "gpg-unavailable"
    assert "/nonexistent" not in response.json()["detail"]  # where gpg lives is for the logs, not the user
    assert not PgpKey.objects.exists()


def test_uploading_while_gpg_cannot_run_is_a_503_and_stores_nothing(owner, registered, entry_for, api_as):
    registered(owner, "owner")
    raw = entry_for("owner")
    with mock.patch.object(gpg, "gpg_binary", autospec=True, return_value="/nonexistent/bin/gpg"):
        response = api_as(owner).post(ENTRIES, data=raw, content_type="application/xml")
    assert response.status_code == 503, response.json()
    assert response.json()["code"] == "gpg-unavailable"
    assert not Entry.objects.exists()


def test_the_service_keeps_the_adapters_error_as_the_cause(owner, keyring, gpg_missing):
    with pytest.raises(Unavailable) as failed:
        services.pgp_key_register(actor=owner, armored=keyring["owner"].armored)
    assert failed.value.status == 503
    assert isinstance(failed.value.__cause__, signing.GpgUnavailable)


def test_a_site_endorsement_while_gpg_cannot_run_is_a_503(owner, registered, entry_for, site_key, staff):
    registered(owner, "owner")
    image = services.entry_upload(raw=entry_for("owner"), uploader=owner).image
    missing = mock.patch.object(gpg, "gpg_binary", autospec=True, return_value="/nonexistent/bin/gpg")
    with missing, pytest.raises(Unavailable):
        services.image_site_endorse(actor=staff, image=image)
    assert not Entry.objects.filter(endorser__email=site_key.email).exists()
