from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone
from rest_framework import status
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from core import audit
from core.idempotency import KEEP_FOR, idempotent
from core.models import AuditEntry, IdempotencyRecord
from core.tasks import idempotency_purge

pytestmark = pytest.mark.django_db
factory = APIRequestFactory()


class CreateThing(APIView):
    """A create endpoint that writes a real row, so duplicates would show."""

    @idempotent
    def post(self, request):
        if request.data.get("fail"):
            return Response({"detail": "no", "code": "invalid"}, status=status.HTTP_400_BAD_REQUEST)
        entry = audit.record(request.user, "test.thing.created", None, name=request.data["name"])
        return Response({"id": entry.pk}, status=status.HTTP_201_CREATED, headers={"Location": f"/things/{entry.pk}/"})


def call(user, body, key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    request = factory.post("/api/v1/things/", body, format="json", **headers)
    if user:
        force_authenticate(request, user=user)
    return CreateThing.as_view()(request)


def test_a_retry_with_the_same_key_replays_the_first_response(owner):
    first = call(owner, {"name": "a"}, key="k-1")
    again = call(owner, {"name": "a"}, key="k-1")
    assert first.status_code == again.status_code == 201
    assert again.data == first.data
    assert again["Location"] == first["Location"]
    assert again["Idempotent-Replayed"] == "true"
    assert AuditEntry.objects.filter(action="test.thing.created").count() == 1


def test_without_a_key_each_request_creates(owner):
    call(owner, {"name": "a"})
    call(owner, {"name": "a"})
    assert AuditEntry.objects.filter(action="test.thing.created").count() == 2


def test_the_same_key_with_another_body_is_refused(owner):
    call(owner, {"name": "a"}, key="k-1")
    response = call(owner, {"name": "b"}, key="k-1")
    assert response.status_code == 422
    assert response.data["code"] == "idempotency-key-reused"
    assert AuditEntry.objects.filter(action="test.thing.created").count() == 1


def test_keys_are_per_user(owner, outsider):
    call(owner, {"name": "a"}, key="shared")
    response = call(outsider, {"name": "a"}, key="shared")
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response
    assert AuditEntry.objects.filter(action="test.thing.created").count() == 2


def test_a_failed_request_releases_its_key(owner):
    assert call(owner, {"fail": True}, key="k-2").status_code == 400
    assert not IdempotencyRecord.objects.exists()
    assert call(owner, {"fail": True, "name": "x"}, key="k-2").status_code == 400


def test_a_retry_while_the_first_runs_is_a_conflict(owner):
    call(owner, {"name": "a"}, key="busy")
    IdempotencyRecord.objects.filter(key="busy").update(response_status=None)  # as while the first runs
    response = call(owner, {"name": "a"}, key="busy")
    assert response.status_code == 409
    assert response.data["code"] == "idempotency-key-in-use"
    assert AuditEntry.objects.filter(action="test.thing.created").count() == 1


def test_an_overlong_key_is_refused(owner):
    response = call(owner, {"name": "a"}, key="k" * 256)
    assert response.status_code == 400
    assert response.data["code"] == "idempotency-key-invalid"


def test_a_key_past_its_keeping_time_is_used_afresh(owner):
    with time_machine.travel(timezone.now() - KEEP_FOR - timedelta(minutes=1)):
        call(owner, {"name": "a"}, key="old")
    response = call(owner, {"name": "b"}, key="old")  # another body: would be 422 within the keeping time
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response
    assert AuditEntry.objects.filter(action="test.thing.created").count() == 2


def test_the_periodic_purge_forgets_old_keys_only(owner):
    with time_machine.travel(timezone.now() - KEEP_FOR - timedelta(minutes=1)):
        call(owner, {"name": "a"}, key="old")
    call(owner, {"name": "a"}, key="new")
    assert idempotency_purge() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]
    assert "core.idempotency_purge" in settings.CELERY_BEAT_SCHEDULE
