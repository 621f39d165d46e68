from __future__ import annotations

import pytest
import yaml
from openapi_spec_validator import validate

pytestmark = pytest.mark.django_db


def test_schema_is_valid_openapi_3(api):
    response = api.get("/api/v1/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    validate(schema)


def test_schema_lists_the_audit_endpoint(api):
    schema = yaml.safe_load(api.get("/api/v1/schema/").content)
    assert "/api/v1/admin/audit/" in schema["paths"]


def test_docs_page_loads_swagger_from_our_own_static_files(client):
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn" not in html.lower()


def test_api_root_links_schema_and_docs(api):
    body = api.get("/api/v1/").json()
    assert body["schema"].endswith("/api/v1/schema/")
    assert body["docs"].endswith("/api/v1/docs/")


def test_unauthenticated_request_gets_the_error_shape(api):
    response = api.get("/api/v1/admin/audit/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert set(response.json()) == {"detail", "code"}
    assert response.json()["code"] == "not_authenticated"


def test_forbidden_request_gets_the_error_shape(api_as, owner):
    response = api_as(owner).get("/api/v1/admin/audit/")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_unknown_api_path_answers_json_404(client):
    response = client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_validation_error_names_the_field_in_detail(api_as, staff):
    response = api_as(staff).get("/api/v1/admin/audit/", {"since": "yesterday"})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert body["detail"].startswith("since: ")
    assert "since" in body["errors"]


def test_token_authentication_uses_the_token_keyword(api, owner):
    from knox.models import AuthToken

    _instance, token = AuthToken.objects.create(user=owner)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/v1/admin/audit/").status_code == 403  # authenticated, not staff
    api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert api.get("/api/v1/admin/audit/").status_code == 401


def test_create_endpoints_document_the_idempotency_key_header(api):
    schema = yaml.safe_load(api.get("/api/v1/schema/").content)
    parameters = schema["paths"]["/api/v1/accounts/registrations/"]["post"]["parameters"]
    assert {"in": "header", "name": "Idempotency-Key"}.items() <= parameters[0].items()
