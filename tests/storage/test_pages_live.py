"""The volume pages behave like the launch page (issue 13): the new-volume form shows what the request does to the
chosen project's quotas before it is sent, and the volumes table and a volume's state move on screen (htmx
partials polled every 2 s while something changes state, every 10 s otherwise)."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.quotas import quota_set
from accounts.services import project_create
from storage import services
from storage.models import Volume

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
PREVIEW = "/storage/parts/volume-preview/"
ROWS = "/storage/parts/volumes/"


def effects(content: bytes) -> list[str]:
    """The preview's quota lines, as the user reads them."""
    lines = re.findall(r"<li [^>]*data-quota[^>]*>(.*?)</li>", content.decode(), re.S)
    return [re.sub(r"<[^>]+>", "", line).strip() for line in lines]


def polls_every(content: bytes) -> str:
    [every] = re.findall(r'hx-trigger="every (\d+s)"', content.decode())
    return every


@pytest.fixture
def made(volume_settings, owner, project):
    """``made(name, size_gib)``: a volume of ``project`` made on its backend (available), or only requested
    (creating) with ``provision=False``."""

    def make(name: str = "results", size_gib: int = 2, *, provision: bool = True) -> Volume:
        volume = services.volume_create(actor=owner, project=project, name=name, size_gib=size_gib)
        return services.volume_provision(volume_id=volume.pk) if provision else volume

    return make


@pytest.fixture
def secret(volume_settings, staff, outsider):
    """Another project (the outsider's) with figures of its own: 1 volume of 77 GiB, limits 7 volumes, 333 GiB."""
    other = project_create(actor=staff, name="secret", manager=outsider)
    quota_set(actor=staff, project=other, limits={"volumes": 7, "volume_gib": 333})
    services.volume_create(actor=outsider, project=other, name="hidden-volume", size_gib=77)
    return other


# --- The preview ------------------------------------------------------------------------------------------------


def test_the_preview_says_what_the_volume_does_to_each_quota(client, made, member, project):
    made("results", 40)
    client.force_login(member)
    answer = client.get(PREVIEW, {"project": project.pk, "kind": "persistent", "size_gib": "20"}, headers=HTMX)
    assert answer.status_code == 200
    assert effects(answer.content) == ["Volumes 1 → 2 of 10", "Volume GiB 40 → 60 of 500"]
    assert b"over the quota" not in answer.content
    assert b"The project has room for this 20 GiB volume." in answer.content


def test_over_quota_lines_are_marked_and_explained_in_words(client, made, member, project, staff):
    made("results", 40)
    quota_set(actor=staff, project=project, limits={"volumes": 1, "volume_gib": 50})
    client.force_login(member)
    answer = client.get(PREVIEW, {"project": project.pk, "kind": "persistent", "size_gib": "20"}, headers=HTMX)
    assert effects(answer.content) == [
        "Volumes 1 → 2 of 1 (over the quota)",
        "Volume GiB 40 → 60 of 50 (over the quota)",
    ]
    assert answer.content.count(b'class="over" data-quota') == 2
    words = " ".join(re.sub(r"<[^>]+>", "", answer.content.decode()).split())
    assert "This volume would be refused: the project has no volumes left of its 1;" in words
    assert "the project has 10 GiB of volume space left of its 50, and this asks for 20." in words
    assert "ask a project manager for more" in words

    # One quota over, the other within: only that line is marked.
    answer = client.get(PREVIEW, {"project": project.pk, "kind": "persistent", "size_gib": "10"}, headers=HTMX)
    assert effects(answer.content) == ["Volumes 1 → 2 of 1 (over the quota)", "Volume GiB 40 → 50 of 50"]


def test_the_page_shows_the_preview_beside_the_form_and_keeps_it_when_a_request_is_refused(
    client, made, member, project, staff
):
    made("results", 3)
    client.force_login(member)
    page = client.get("/storage/volumes/")
    assert b'id="preview"' in page.content and b'hx-get="/storage/parts/volume-preview/"' in page.content
    assert b"Give the size in GiB (1 to " in page.content  # the first project is chosen; no size yet

    quota_set(actor=staff, project=project, limits={"volume_gib": 5})
    page = client.post("/storage/volumes/", {"name": "big", "project": project.pk, "kind": "persistent", "size_gib": 9})
    assert page.status_code == 400 and b"quota-exceeded" in page.content
    assert effects(page.content) == ["Volumes 1 → 2 of 10", "Volume GiB 3 → 12 of 5 (over the quota)"]
    assert Volume.objects.count() == 1


def test_a_static_volume_is_counted_at_its_images_size(
    client, volume_settings, member, project, disk_image, publish, tmp_path
):
    client.force_login(member)
    answer = client.get(PREVIEW, {"project": project.pk, "kind": "static", "image": disk_image}, headers=HTMX)
    assert effects(answer.content) == ["Volumes 0 → 1 of 10", "Volume GiB 0 → 1 of 500"]
    answer = client.get(PREVIEW, {"project": project.pk, "kind": "static", "image": disk_image, "size_gib": "30"})
    assert effects(answer.content) == ["Volumes 0 → 1 of 10", "Volume GiB 0 → 30 of 500"]
    machine_file = tmp_path / "images" / "machine.raw"
    machine_file.write_bytes(b"a machine image")
    machine = publish(b"a machine image", locations=[machine_file.as_uri()])
    answer = client.get(PREVIEW, {"project": project.pk, "kind": "static", "image": machine}, headers=HTMX)
    assert b"is a machine image; a static volume copies a disk image" in answer.content and not effects(answer.content)
    answer = client.get(PREVIEW, {"project": project.pk, "kind": "static", "image": "nonesuch"}, headers=HTMX)
    assert b"There is no such image in the Marketplace" in answer.content and not effects(answer.content)


@pytest.mark.parametrize(
    ("size", "sentence"),
    [
        ("0", "“0” is not one"),
        ("-1", "“-1” is not one"),
        ("abc", "“abc” is not one"),
        ("9" * 40, "“99999999999999999999…” is not one"),
        ("1.5", "“1.5” is not one"),
        ("", "Give the size in GiB"),
    ],
)
def test_nonsense_sizes_get_a_sentence_not_figures(client, volume_settings, member, project, size, sentence):
    client.force_login(member)
    answer = client.get(PREVIEW, {"project": project.pk, "kind": "persistent", "size_gib": size}, headers=HTMX)
    assert answer.status_code == 200
    assert sentence in answer.content.decode()
    assert not effects(answer.content)


@pytest.mark.parametrize("chosen", ["", "abc", "-1", "999999", "1 OR 1=1"])
def test_nonsense_projects_get_a_sentence(client, volume_settings, member, project, chosen):
    client.force_login(member)
    answer = client.get(PREVIEW, {"project": chosen, "kind": "persistent", "size_gib": "1"}, headers=HTMX)
    assert answer.status_code == 200
    assert b"Choose one of your projects" in answer.content and not effects(answer.content)


def test_another_projects_figures_are_never_shown(client, member, project, secret):
    client.force_login(member)
    answer = client.get(PREVIEW, {"project": secret.pk, "kind": "persistent", "size_gib": "1"}, headers=HTMX)
    assert answer.status_code == 200
    assert b"Choose one of your projects" in answer.content
    for figure in (b"77", b"78", b"333", b"secret", b"of 7"):
        assert figure not in answer.content
    # The same project, asked through the page's form, is refused and shows nothing of it either.
    page = client.post("/storage/volumes/", {"name": "x", "project": secret.pk, "kind": "persistent", "size_gib": 1})
    assert page.status_code == 400
    assert b"333" not in page.content and b"hidden-volume" not in page.content
    assert not Volume.objects.filter(name="x").exists()


def test_a_preview_asked_after_the_session_ended_reloads_the_page(client):
    answer = client.get(PREVIEW, {"project": "1", "size_gib": "1"}, headers=HTMX)
    assert answer["HX-Refresh"] == "true" and answer.content == b""


# --- The live table ---------------------------------------------------------------------------------------------


def test_the_table_part_lists_only_my_projects_volumes(client, made, member, secret):
    made("results", 2)
    client.force_login(member)
    answer = client.get(ROWS, headers=HTMX)
    assert answer.status_code == 200
    assert b"results" in answer.content and b"hidden-volume" not in answer.content
    assert b'id="volumes"' in answer.content and b'hx-swap="outerHTML"' in answer.content


def test_the_table_polls_fast_only_while_a_volume_moves(client, made, member, django_capture_on_commit_callbacks):
    client.force_login(member)
    assert polls_every(client.get(ROWS, headers=HTMX).content) == "10s"  # nothing at all
    creating = made("scratch", 1, provision=False)
    answer = client.get(ROWS, headers=HTMX)
    assert polls_every(answer.content) == "2s" and b'data-state="creating"' in answer.content
    services.volume_provision(volume_id=creating.pk)
    answer = client.get(ROWS, headers=HTMX)
    assert polls_every(answer.content) == "10s" and b'data-state="available"' in answer.content
    # The page starts polling the same way.
    assert polls_every(client.get("/storage/volumes/").content.split(b"<h2>New volume</h2>")[0]) == "10s"


def test_the_table_part_keeps_its_page(client, made, member, monkeypatch):
    monkeypatch.setattr("storage.views.PAGE_SIZE", 2)
    for n in range(3):
        made(f"vol-{n}", 1)
    client.force_login(member)
    answer = client.get(ROWS, {"page": "2"}, headers=HTMX)
    assert b"vol-0" in answer.content and b"vol-2" not in answer.content
    assert b'hx-get="/storage/parts/volumes/?page=2"' in answer.content


def test_the_table_part_asks_a_fixed_number_of_queries_however_many_volumes(client, made, member, owner):
    made("one", 1)
    client.force_login(member)
    with CaptureQueriesContext(connection) as one:
        client.get(ROWS, headers=HTMX)
    for n in range(6):
        made(f"more-{n}", 1)
    with CaptureQueriesContext(connection) as seven:
        answer = client.get(ROWS, headers=HTMX)
    assert answer.content.count(b"data-volume=") == 7
    assert len(seven.captured_queries) == len(one.captured_queries) <= 6


def test_a_table_refresh_after_the_session_ended_reloads_the_page(client):
    answer = client.get(ROWS, headers=HTMX)
    assert answer["HX-Refresh"] == "true" and answer.content == b""
    assert client.get(ROWS)["Location"].startswith("/accounts/login/")  # without htmx: the login page


# --- One volume's state -----------------------------------------------------------------------------------------


def test_a_volume_page_polls_its_state_fast_while_it_moves(client, made, member):
    volume = made("scratch", 1, provision=False)
    client.force_login(member)
    page = client.get(f"/storage/volumes/{volume.uuid}/")
    status = f"/storage/parts/volumes/{volume.uuid}/state/?was=creating"
    assert f'hx-get="{status}"'.encode() in page.content and polls_every(page.content) == "2s"
    answer = client.get(status, headers=HTMX)
    assert answer.status_code == 200 and b"badge creating" in answer.content and polls_every(answer.content) == "2s"


def test_a_new_state_reloads_the_volume_page_so_its_actions_match(client, made, member):
    volume = made("scratch", 1, provision=False)
    services.volume_provision(volume_id=volume.pk)
    client.force_login(member)
    answer = client.get(f"/storage/parts/volumes/{volume.uuid}/state/?was=creating", headers=HTMX)
    assert answer["HX-Refresh"] == "true"
    answer = client.get(f"/storage/parts/volumes/{volume.uuid}/state/?was=available", headers=HTMX)
    assert b"badge available" in answer.content and polls_every(answer.content) == "10s"


def test_another_projects_volume_state_is_404(client, member, secret, outsider):
    hidden = Volume.objects.get(name="hidden-volume")
    client.force_login(member)
    for url in (f"/storage/parts/volumes/{hidden.uuid}/state/", "/storage/parts/volumes/not-a-uuid/state/"):
        answer = client.get(url, {"was": "available"}, headers=HTMX)
        assert answer.status_code == 404 and b"hidden-volume" not in answer.content
    client.force_login(outsider)
    assert client.get(f"/storage/parts/volumes/{hidden.uuid}/state/", headers=HTMX).status_code == 200


# --- In a real browser ------------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_in_a_browser_the_preview_follows_the_form_and_a_new_volume_moves_on_screen(
    page, volume_settings, member, project
):
    from tests.factories import TEST_PASSWORD

    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("member")
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.goto("/storage/volumes/")
    page.get_by_label("Size (GiB)").fill("20")
    page.locator('#preview li[data-quota="Volume GiB"]', has_text="Volume GiB 0 → 20 of 500").wait_for()
    previews = [url for url in asked if "/storage/parts/volume-preview/" in url]
    assert previews and not any("csrfmiddlewaretoken" in url for url in previews)  # the token stays out of URLs
    page.get_by_label("Size (GiB)").fill("")
    page.get_by_text("Give the size in GiB").wait_for()

    # A volume requested elsewhere (the API, another tab) appears, then moves from creating to available.
    volume = services.volume_create(actor=member, project=project, name="elsewhere", size_gib=1)
    page.locator(f'tr[data-volume="{volume.uuid}"][data-state="creating"]').wait_for(timeout=15_000)
    services.volume_provision(volume_id=volume.pk)
    page.locator(f'tr[data-volume="{volume.uuid}"][data-state="available"]').wait_for(timeout=15_000)
    assert page.url.endswith("/storage/volumes/")

    # A volume's own page follows its state too: a new state redraws the page.
    second = services.volume_create(actor=member, project=project, name="second", size_gib=1)
    page.goto(f"/storage/volumes/{second.uuid}/")
    page.locator("#volume-status .badge.creating").wait_for()
    services.volume_provision(volume_id=second.pk)
    page.locator("#volume-status .badge.available").wait_for(timeout=15_000)
