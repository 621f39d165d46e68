"""The volume pages: list and request, show, delete; the same rules as the API (only one's own projects, the
same 404 for missing and forbidden, 409-worthy refusals shown as messages)."""

from __future__ import annotations

import pytest

from storage import services
from storage.models import Volume

pytestmark = pytest.mark.django_db

VM1 = "0b5e8d5c-2222-4d7e-9f00-000000000001"


@pytest.fixture
def volume(volume_settings, owner, project):
    made = services.volume_create(actor=owner, project=project, name="results", size_gib=2)
    return services.volume_provision(volume_id=made.pk)


def test_anonymous_visitors_are_sent_to_log_in(client, volume):
    for url in ("/storage/volumes/", f"/storage/volumes/{volume.uuid}/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_the_list_shows_the_volumes_of_my_projects_only(client, volume, member, outsider):
    client.force_login(member)
    page = client.get("/storage/volumes/")
    assert page.status_code == 200
    assert b"results" in page.content and b"2 GiB" in page.content and b"available" in page.content

    client.force_login(outsider)
    page = client.get("/storage/volumes/")
    assert b"results" not in page.content
    assert b"No volumes yet" in page.content
    assert b"You are in no project yet" in page.content  # the factory's users have no personal project


def test_requesting_a_volume_from_the_page(
    client, volume_settings, member, project, django_capture_on_commit_callbacks
):
    client.force_login(member)
    with django_capture_on_commit_callbacks() as sent:
        response = client.post(
            "/storage/volumes/", {"name": "scratch", "project": project.pk, "kind": "persistent", "size_gib": 4}
        )
    made = Volume.objects.get(name="scratch")
    assert response.status_code == 302 and response["Location"] == f"/storage/volumes/{made.uuid}/"
    assert (made.size_gib, made.state, made.created_by) == (4, "creating", member)
    assert len(sent) == 1
    page = client.get(response["Location"])
    assert b"being made" in page.content and b"creating" in page.content


def test_a_refused_request_shows_the_reason_and_makes_nothing(client, volume_settings, member, project):
    client.force_login(member)
    response = client.post("/storage/volumes/", {"name": "x", "project": project.pk, "kind": "static"})
    assert response.status_code == 400
    assert b"image-required" in response.content
    assert not Volume.objects.exists()


def test_a_project_i_am_not_in_cannot_be_chosen(client, volume_settings, outsider, project):
    client.force_login(outsider)
    response = client.post("/storage/volumes/", {"name": "x", "project": project.pk, "size_gib": 1})
    assert response.status_code == 400
    assert not Volume.objects.exists()


def test_a_volume_page_is_404_for_others_and_for_nonsense(client, volume, outsider, staff, member):
    for user in (outsider, staff):
        client.force_login(user)
        assert client.get(f"/storage/volumes/{volume.uuid}/").status_code == 404
        assert client.post(f"/storage/volumes/{volume.uuid}/delete/").status_code == 404
    client.force_login(member)
    assert client.get("/storage/volumes/not-a-uuid/").status_code == 404
    assert Volume.objects.get(pk=volume.pk).state == "available"


def test_the_volume_page_shows_its_facts_and_deletes_it(client, volume, member):
    client.force_login(member)
    page = client.get(f"/storage/volumes/{volume.uuid}/")
    assert page.status_code == 200
    assert str(volume.uuid).encode() in page.content and b"Delete volume" in page.content
    assert b'id="volume-actions"' in page.content  # where compute's attach and detach forms go

    response = client.post(f"/storage/volumes/{volume.uuid}/delete/", follow=True)

    assert Volume.objects.get(pk=volume.pk).state == "deleting"
    assert b"is being deleted" in response.content


def test_deleting_a_held_volume_from_the_page_is_refused_with_the_reason(client, volume, member, project):
    services.volume_attach_begin(actor=member, project=project, volume_id=str(volume.uuid), holder=VM1)
    client.force_login(member)

    response = client.post(f"/storage/volumes/{volume.uuid}/delete/", follow=True)

    assert b"detach it first" in response.content
    assert Volume.objects.get(pk=volume.pk).state == "attaching"
    assert b"Delete volume" not in response.content


def test_delete_takes_post_only(client, volume, member):
    client.force_login(member)
    assert client.get(f"/storage/volumes/{volume.uuid}/delete/").status_code == 405
