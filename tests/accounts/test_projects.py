"""Projects, members and roles: managers manage, members look, outsiders see nothing (the cast and the
project ``climate`` come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from accounts import selectors
from accounts.models import Membership, Project
from accounts.services import project_create, project_personal_ensure

pytestmark = pytest.mark.django_db


def test_staff_create_a_project_with_its_first_manager_and_default_quota(api_as, staff, owner, settings):
    response = api_as(staff).post("/api/v1/accounts/projects/", {"name": "astro", "manager": "owner"})
    assert response.status_code == 201
    project = Project.objects.get(name="astro")
    assert Membership.objects.get(project=project).user == owner
    assert project.quota.limits() == settings.ACCOUNTS_QUOTA_DEFAULTS
    assert response.json()["quotas"]["vcpus"] == {"limit": settings.ACCOUNTS_QUOTA_DEFAULTS["vcpus"], "used": 0}


@pytest.mark.parametrize("name", ["personal-mine", "x", "has space", "-dash"])
def test_bad_project_names_are_refused(api_as, staff, name):
    response = api_as(staff).post("/api/v1/accounts/projects/", {"name": name, "manager": "staff"})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("name: ")


def test_a_project_name_is_unique(api_as, staff, project):
    response = api_as(staff).post("/api/v1/accounts/projects/", {"name": "climate", "manager": "staff"})
    assert response.status_code == 409


def test_users_list_only_their_projects_with_their_role(api_as, owner, member, outsider, project):
    project_personal_ensure(user=member)
    names = {p["name"]: p["role"] for p in api_as(member).get("/api/v1/accounts/projects/").json()["results"]}
    assert names == {"climate": "member", "personal-member": "manager"}
    assert api_as(outsider).get("/api/v1/accounts/projects/").json()["results"] == []


def test_manager_adds_a_member_who_then_sees_the_project(api_as, owner, outsider, project):
    response = api_as(owner).post(
        f"/api/v1/accounts/projects/{project.pk}/members/", {"username": "outsider", "role": "member"}
    )
    assert response.status_code == 201
    assert response.json()["username"] == "outsider"
    assert api_as(outsider).get(f"/api/v1/accounts/projects/{project.pk}/").json()["role"] == "member"


def test_adding_someone_twice_or_unknown_is_refused(api_as, owner, project):
    client = api_as(owner)
    again = client.post(f"/api/v1/accounts/projects/{project.pk}/members/", {"username": "member"})
    assert again.status_code == 409 and again.json()["code"] == "already-member"
    unknown = client.post(f"/api/v1/accounts/projects/{project.pk}/members/", {"username": "nobody"})
    assert unknown.status_code == 400 and unknown.json()["detail"].startswith("username: ")


def test_manager_promotes_and_demotes(api_as, owner, member, project):
    url = f"/api/v1/accounts/projects/{project.pk}/members/{member.pk}/"
    assert api_as(owner).patch(url, {"role": "manager"}).json()["role"] == "manager"
    # Now two managers: the first may step down.
    own = f"/api/v1/accounts/projects/{project.pk}/members/{owner.pk}/"
    assert api_as(owner).patch(own, {"role": "member"}).json()["role"] == "member"
    assert api_as(owner).patch(url, {"role": "member"}).status_code == 403  # no longer a manager


def test_the_last_manager_can_neither_step_down_nor_leave(api_as, owner, project):
    url = f"/api/v1/accounts/projects/{project.pk}/members/{owner.pk}/"
    demote = api_as(owner).patch(url, {"role": "member"})
    assert demote.status_code == 409 and demote.json()["code"] == "last-manager"
    assert api_as(owner).delete(url).status_code == 409
    assert Membership.objects.get(project=project, user=owner).role == "manager"


def test_a_member_may_leave_but_not_remove_others(api_as, owner, member, project):
    assert api_as(member).delete(f"/api/v1/accounts/projects/{project.pk}/members/{owner.pk}/").status_code == 403
    assert api_as(member).delete(f"/api/v1/accounts/projects/{project.pk}/members/{member.pk}/").status_code == 204
    assert not Membership.objects.filter(project=project, user=member).exists()


def test_a_bad_role_is_refused(api_as, owner, member, project):
    response = api_as(owner).patch(f"/api/v1/accounts/projects/{project.pk}/members/{member.pk}/", {"role": "king"})
    assert response.status_code == 400 and response.json()["detail"].startswith("role: ")


def test_missing_and_forbidden_projects_give_the_same_404(api_as, outsider, project):
    client = api_as(outsider)
    forbidden = client.get(f"/api/v1/accounts/projects/{project.pk}/")
    missing = client.get("/api/v1/accounts/projects/999999/")
    assert forbidden.status_code == missing.status_code == 404
    assert forbidden.json() == missing.json()


def test_project_list_queries_do_not_grow_with_the_number_of_projects(api_as, owner, staff):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries_listing(expected: int) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert len(api_as(owner).get("/api/v1/accounts/projects/").json()["results"]) == expected
        return len(captured)

    project_create(actor=staff, name="p0x", manager=owner)
    one = queries_listing(1)
    for n in range(1, 6):
        project_create(actor=staff, name=f"p{n}x", manager=owner)
    assert queries_listing(6) == one


def test_a_project_name_with_a_trailing_newline_is_refused(staff):
    # The API trims its input; the service is what every caller goes through.
    from core.errors import ApplicationError

    with pytest.raises(ApplicationError, match="^name: "):
        project_create(actor=staff, name="astro\n", manager=staff)
    assert not Project.objects.filter(name__startswith="astro").exists()


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/accounts/projects/{project}/members/99999999999999999999/",
        "/api/v1/accounts/projects/1234567890123456789/",
        "/api/v1/admin/registrations/99999999999999999999/",
    ],
)
def test_ids_beyond_64_bits_are_not_found_as_json(api_as, staff, url):
    project = project_personal_ensure(user=staff)
    response = api_as(staff).get(url.format(project=project.pk))
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_an_id_of_eighteen_digits_reaches_the_view(api_as, owner):
    response = api_as(owner).get("/api/v1/accounts/projects/999999999999999999/")
    assert response.status_code == 404
    assert response.json() == {"detail": "No such project.", "code": "not_found"}


def test_page_ids_beyond_64_bits_are_not_found(client, owner):
    client.force_login(owner)
    assert client.post("/accounts/profile/ssh-keys/99999999999999999999/delete/").status_code == 404


def test_no_route_of_any_app_takes_an_unbounded_int():
    from django.urls import URLResolver, get_resolver
    from django.urls.converters import IntConverter

    def routes(patterns, prefix=""):
        for entry in patterns:
            here = prefix + str(entry.pattern)
            yield here, getattr(entry.pattern, "converters", {})
            if isinstance(entry, URLResolver):
                yield from routes(entry.url_patterns, here)

    unbounded = [
        route
        for route, converters in routes(get_resolver().url_patterns)
        if any(isinstance(c, IntConverter) for c in converters.values())
    ]
    assert unbounded == [], "use <id:…> (core/converters.py): an int beyond 64 bits overflows the database"


def test_a_project_read_for_one_member_tells_another_user_their_own_role(owner, member, outsider, project):
    loaded = selectors.access_project(actor=owner, project_id=project.pk)
    assert selectors.project_role(actor=owner, project=loaded) == "manager"
    # The role read with the project is the owner's: anyone else is looked up, not given the owner's role.
    assert selectors.project_role(actor=member, project=loaded) == "member"
    assert selectors.project_role(actor=outsider, project=loaded) is None


def test_a_project_is_read_with_the_actors_role_in_one_query(owner, project, django_assert_num_queries):
    with django_assert_num_queries(1):
        loaded = selectors.access_project(actor=owner, project_id=project.pk, manage=True)
        assert loaded.quota.instances >= 0
        assert selectors.project_role(actor=owner, project=loaded) == "manager"
