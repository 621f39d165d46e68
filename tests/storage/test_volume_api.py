"""The storage API (DESIGN §6): who may call what (permission matrix), what a volume shows, bad input, quotas,
Idempotency-Key, the 409 of a held volume, and how many queries the list takes."""

from __future__ import annotations

from pathlib import Path

import pytest

from accounts.quotas import quota_set
from storage import services
from storage.models import Volume

pytestmark = pytest.mark.django_db

VM1 = "0b5e8d5c-1111-4d7e-9f00-000000000001"


@pytest.fixture
def world(volume_settings, owner, member, outsider, staff, project):
    volume = services.volume_provision(
        volume_id=services.volume_create(actor=owner, project=project, name="results", size_gib=2).pk
    )
    held = services.volume_provision(
        volume_id=services.volume_create(actor=owner, project=project, name="held", size_gib=1).pk
    )
    services.volume_attach_begin(actor=owner, project=project, volume_id=str(held.uuid), holder=VM1)
    services.volume_attach_end(volume_id=str(held.uuid), holder=VM1, ok=True)
    return {
        "users": {"owner": owner, "member": member, "outsider": outsider, "staff": staff},
        "volume": volume,
        "held": held,
        "project": project,
    }


def client_for(api, world, role):
    if role != "anonymous":
        api.force_authenticate(user=world["users"][role])
    return api


MATRIX = [
    # method, url, {role: status}
    ("get", "/api/v1/storage/volumes/", {"anonymous": 401, "outsider": 200, "member": 200, "owner": 200, "staff": 200}),
    ("post", "/api/v1/storage/volumes/", {"anonymous": 401}),
    (
        "get",
        "/api/v1/storage/volumes/{volume}/",
        {"anonymous": 401, "outsider": 404, "staff": 404, "member": 200, "owner": 200},
    ),
    ("get", "/api/v1/storage/volumes/not-a-uuid/", {"owner": 404}),
    ("get", "/api/v1/storage/volumes/00000000-0000-4000-8000-000000000000/", {"owner": 404}),
    (
        "delete",
        "/api/v1/storage/volumes/{held}/",
        {"anonymous": 401, "outsider": 404, "staff": 404, "member": 409, "owner": 409},
    ),
    ("delete", "/api/v1/storage/volumes/{volume}/", {"anonymous": 401, "outsider": 404, "staff": 404, "member": 202}),
    ("delete", "/api/v1/storage/volumes/{volume}/", {"owner": 202}),
]
CASES = [(m, u, r, s) for m, u, expected in MATRIX for r, s in expected.items()]


@pytest.mark.parametrize(("method", "path", "role", "expected"), CASES)
def test_permission_matrix(api, world, method, path, role, expected):
    url = path.format(volume=world["volume"].uuid, held=world["held"].uuid)
    response = getattr(client_for(api, world, role), method)(url, {}, format="json")
    assert response.status_code == expected, response.content
    if expected >= 400:
        assert set(response.json()) >= {"detail", "code"}


def test_post_by_someone_outside_the_project_is_404_and_makes_nothing(api_as, world, outsider, staff):
    for user in (outsider, staff):
        response = api_as(user).post(
            "/api/v1/storage/volumes/", {"name": "x", "size_gib": 1, "project": world["project"].pk}, format="json"
        )
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert Volume.objects.count() == 2


def test_a_volume_shows_the_design_fields(api_as, world, member):
    held = world["held"]
    body = api_as(member).get(f"/api/v1/storage/volumes/{held.uuid}/").json()

    assert body["id"] == str(held.uuid)
    assert (body["name"], body["kind"], body["size_gib"], body["state"]) == ("held", "persistent", 1, "in-use")
    assert body["attached_to"] == [VM1]
    assert body["project"] == world["project"].pk
    assert {"state_message", "created", "backend", "format", "image"} <= set(body)
    assert "path" not in body and "chap_secret" not in body


def test_the_list_shows_only_the_actors_projects_and_filters(api_as, world, outsider, owner):
    assert api_as(outsider).get("/api/v1/storage/volumes/").json()["results"] == []
    client = api_as(owner)
    names = [row["name"] for row in client.get("/api/v1/storage/volumes/").json()["results"]]
    assert names == ["held", "results"]  # newest first
    in_use = client.get("/api/v1/storage/volumes/?state=in-use").json()["results"]
    assert [row["name"] for row in in_use] == ["held"]


def test_the_list_takes_a_fixed_number_of_queries(api_as, world, owner, project, django_assert_max_num_queries):
    client = api_as(owner)
    with django_assert_max_num_queries(4) as few:
        client.get("/api/v1/storage/volumes/")
    for n in range(5):
        volume = services.volume_create(actor=owner, project=project, name=f"v{n}", size_gib=1)
        services.volume_provision(volume_id=volume.pk)
        services.volume_attach_begin(actor=owner, project=project, volume_id=str(volume.uuid), holder=f"vm-{n}")
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert len(client.get("/api/v1/storage/volumes/").json()["results"]) == 7


def test_request_a_volume(api_as, world, member, project, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as sent:
        response = api_as(member).post(
            "/api/v1/storage/volumes/", {"name": "scratch", "size_gib": 3, "project": project.pk}, format="json"
        )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert (body["name"], body["size_gib"], body["state"], body["kind"], body["backend"]) == (
        "scratch", 3, "creating", "persistent", "file",
    )  # fmt: skip
    assert len(sent) == 1
    volume = Volume.objects.get(uuid=body["id"])
    assert volume.created_by == member


def test_request_is_idempotent_with_a_key(api_as, world, owner, project):
    client = api_as(owner)
    body = {"name": "once", "size_gib": 1, "project": project.pk}
    first = client.post("/api/v1/storage/volumes/", body, format="json", HTTP_IDEMPOTENCY_KEY="v-1")
    again = client.post("/api/v1/storage/volumes/", body, format="json", HTTP_IDEMPOTENCY_KEY="v-1")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert Volume.objects.filter(name="once").count() == 1
    other = client.post("/api/v1/storage/volumes/", {**body, "size_gib": 2}, format="json", HTTP_IDEMPOTENCY_KEY="v-1")
    assert other.status_code == 422


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"size_gib": 0}, "min_value"),
        ({"size_gib": "lots"}, "invalid"),
        ({"size_gib": 10**9}, "volume-size"),
        ({"name": ""}, "blank"),
        ({"name": "a\u202ename"}, "volume-name"),
        ({"kind": "volatile"}, "invalid_choice"),
        ({"kind": "static"}, "image-required"),
        ({"kind": "static", "image": "A" * 27}, "image-unknown"),
        ({"backend": "ceph"}, "invalid_choice"),
        ({"backend": "iscsi"}, "backend-unknown"),
        ({"project": "x"}, "invalid"),
    ],
)
def test_bad_input_is_a_clear_400_that_changes_nothing(api_as, world, owner, project, change, code):
    body = {"name": "bad", "size_gib": 1, "project": project.pk, **change}
    response = api_as(owner).post("/api/v1/storage/volumes/", body, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == code, response.json()
    assert Volume.objects.count() == 2


def test_over_quota_is_409_with_the_numbers(api_as, world, owner, staff, project):
    quota_set(actor=staff, project=project, limits={"volume_gib": 5})
    response = api_as(owner).post(
        "/api/v1/storage/volumes/", {"name": "big", "size_gib": 3, "project": project.pk}, format="json"
    )
    assert response.status_code == 409
    body = response.json()
    assert (body["detail"], body["code"]) == (
        "Volume GiB quota exceeded (quota 5, used 3, requested 3)",
        "quota-exceeded",
    )
    assert Volume.objects.count() == 2


def test_deleting_a_held_volume_is_409_and_its_file_stays(api_as, world, owner):
    held = world["held"]
    response = api_as(owner).delete(f"/api/v1/storage/volumes/{held.uuid}/")
    assert response.status_code == 409
    assert response.json()["code"] == "volume-in-use"
    assert response.json()["attached_to"] == [VM1]
    held.refresh_from_db()
    assert held.state == "in-use" and Path(held.path).exists()


def test_delete_answers_202_deleting_and_again_202(api_as, world, owner, django_capture_on_commit_callbacks):
    client = api_as(owner)
    url = f"/api/v1/storage/volumes/{world['volume'].uuid}/"
    with django_capture_on_commit_callbacks() as sent:
        first = client.delete(url)
    assert first.status_code == 202 and first.json()["state"] == "deleting"
    assert len(sent) == 1
    assert client.delete(url).status_code == 202


def test_the_volumes_endpoints_are_in_the_openapi_schema(api_as, owner):
    schema = api_as(owner).get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/storage/volumes/"])
    assert {"get", "delete"} <= set(paths["/api/v1/storage/volumes/{volume_id}/"])
    assert "202" in paths["/api/v1/storage/volumes/"]["post"]["responses"]
