"""``alto volume``: persistent and static disks (DESIGN.md §5)."""

from __future__ import annotations

import time
import uuid
from contextlib import nullcontext

import click
from rich.text import Text

from alto_client import output
from alto_client.api import AltoError, uuid_of
from alto_client.context import AltoGroup, Context, example, json_option, pass_ctx

VOLUME_COLUMNS = [
    ("id", "ID"),
    ("name", "Name"),
    ("kind", "Kind"),
    ("size_gib", "GiB"),
    ("state", "State"),
    ("attached_to", "Attached to"),
    ("project", "Project"),
]
VOLUME_FIELDS = [
    ("id", "ID"),
    ("name", "Name"),
    ("kind", "Kind"),
    ("size_gib", "Size GiB"),
    ("state", "State"),
    ("state_message", "Message"),
    ("image", "Image"),
    ("attached_to", "Attached to"),
    ("project", "Project"),
    ("created", "Created"),
]


def _path(volume: str) -> str:
    return f"storage/volumes/{uuid_of(volume, 'a volume id (a UUID, as `alto volume list` shows)')}/"


def wait_volume(obj: Context, volume: str, target: str, *, timeout: float, interval: float = 1.0) -> dict:
    deadline = time.monotonic() + timeout
    display = nullcontext() if obj.as_json else output.errors.status(f"volume {volume}: waiting for {target}")
    with display as status:
        while True:
            shown = obj.api.get(_path(volume))
            if status is not None:
                status.update(Text(f"volume {shown['name']}: {shown['state']}"))
            if shown["state"] == target:
                return shown
            if shown["state"] in ("error", "deleted") or (target == "in-use" and shown["state"] == "available"):
                raise AltoError(f"volume {shown['name']} ended {shown['state']}: {shown.get('state_message') or ''}")
            if time.monotonic() > deadline:
                raise AltoError(f"volume {shown['name']} is still {shown['state']} after {int(timeout)}s")
            time.sleep(interval)


@click.group(cls=AltoGroup, help="Volumes: persistent disks that outlive VMs, and static copies of Marketplace disks.")
def volume() -> None:
    pass


@volume.command(
    help="Create a volume: an empty persistent disk, or with --static a read-only copy of a Marketplace disk image."
    + example(
        "alto volume create --name data --size 20 --wait\nalto volume create --name refdata --static IDENTIFIER --wait"
    )
)
@click.option("--name", required=True)
@click.option("--size", "size_gib", type=click.IntRange(min=1), help="Size in GiB (persistent volumes).")
@click.option("--static", "image", help="Marketplace identifier of a disk image: a static (read-only) volume.")
@click.option("--project", type=int, help="Project id [default: profile's, else your personal project].")
@click.option("--wait", is_flag=True, help="Wait until it is available.")
@click.option("--timeout", type=float, default=600, show_default=True)
@json_option
@pass_ctx
def create(
    obj: Context, name: str, size_gib: int | None, image: str | None, project: int | None, wait: bool, timeout: float
) -> None:
    if image is None and size_gib is None:
        raise click.UsageError("give --size for a persistent volume, or --static IMAGE")
    body: dict = {"name": name, "kind": "static" if image else "persistent", "project": obj.project(project)}
    if size_gib is not None:
        body["size_gib"] = size_gib
    if image:
        body["image"] = image
    created = obj.api.post("storage/volumes/", body, headers={"Idempotency-Key": str(uuid.uuid4())})
    if wait:
        created = wait_volume(obj, str(created["id"]), "available", timeout=timeout)
    obj.show(created, lambda: output.fields(created, VOLUME_FIELDS))


@volume.command("list", help="Your projects' volumes." + example("alto volume list"))
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option
@pass_ctx
def list_(obj: Context, limit: int) -> None:
    rows = list(obj.api.pages("storage/volumes/", limit=limit))
    obj.show(rows, lambda: output.table(rows, VOLUME_COLUMNS, title="Volumes"))


@volume.command(help="One volume." + example("alto volume show 5d0c3a8e-2f41-4b7a-9e6d-1a2b3c4d5e6f"))
@click.argument("volume_id")
@json_option
@pass_ctx
def show(obj: Context, volume_id: str) -> None:
    shown = obj.api.get(_path(volume_id))
    obj.show(shown, lambda: output.fields(shown, VOLUME_FIELDS))


@volume.command(
    help="Delete a volume (not while it is attached)."
    + example("alto volume delete 5d0c3a8e-2f41-4b7a-9e6d-1a2b3c4d5e6f")
)
@click.argument("volume_id")
@click.option("--wait", is_flag=True, help="Wait until it is deleted.")
@click.option("--timeout", type=float, default=600, show_default=True)
@json_option
@pass_ctx
def delete(obj: Context, volume_id: str, wait: bool, timeout: float) -> None:
    shown = obj.api.delete(_path(volume_id))
    if wait:
        shown = wait_volume(obj, volume_id, "deleted", timeout=timeout)
    obj.show(shown, lambda: output.say(f"Volume {shown['name']} is {shown['state']}."))


def register(root: click.Group) -> None:
    root.add_command(volume)
