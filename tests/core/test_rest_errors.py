"""Hostile bodies under /api/ get the API's own 4xx shape, never a 500 or Django's HTML 400."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

REGISTRATIONS = "/api/v1/accounts/registrations/"
# An endpoint that reads request.body itself (Idempotency-Key) and one that does not.
ENDPOINTS = [(REGISTRATIONS, {}), (REGISTRATIONS, {"HTTP_IDEMPOTENCY_KEY": "k-1"})]


@pytest.mark.parametrize(("url", "headers"), ENDPOINTS)
def test_deeply_nested_json_is_a_parse_error_naming_the_nesting(api, url, headers):
    response = api.post(url, data="[" * 100_000, content_type="application/json", **headers)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "detail": "JSON parse error - the document nests deeper than 32 levels.",
        "code": "parse-error",
    }


def test_json_nested_below_the_parsers_recursion_limit_but_past_ours_is_refused_too(api):
    body = '{"username": ' + "[" * 200 + "]" * 200 + "}"
    response = api.post(REGISTRATIONS, data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse-error"
    assert "32 levels" in response.json()["detail"]


def test_malformed_json_is_a_parse_error_in_the_api_shape(api):
    response = api.post(REGISTRATIONS, data='{"username": ', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse-error"
    assert response.json()["detail"].startswith("JSON parse error")


@pytest.mark.parametrize(("url", "headers"), ENDPOINTS)
def test_a_50_mb_json_body_is_refused_with_413_too_large(api, settings, url, headers):
    body = b'{"message": "' + b"x" * (50 * 1024 * 1024) + b'"}'
    response = api.post(url, data=body, content_type="application/json", **headers)
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "detail": f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
        "code": "too-large",
    }


def test_a_too_large_form_body_is_refused_with_413_too(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.post(REGISTRATIONS, data="message=" + "x" * 5000, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413
    assert response.json()["code"] == "too-large"


def test_a_body_without_a_declared_length_is_cut_at_the_limit(settings, rf):
    from rest_framework.exceptions import APIException

    from core.rest import JSONParser

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10
    request = rf.post("/api/v1/", data=b'{"a": "0123456789"}', content_type="application/json")
    del request.META["CONTENT_LENGTH"]
    with pytest.raises(APIException) as refused:
        JSONParser().parse(request, parser_context={"request": request})
    assert refused.value.status_code == 413


def test_portal_pages_keep_djangos_answer_to_a_too_large_form(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = Client().post("/accounts/register/", {"message": "x" * 5000})
    assert response.status_code == 400
