"""``alto image``: build, sign, validate and upload Marketplace entries; deprecate, search, show, policy."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import alto_metadata as md
import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from alto_client import gpg, output
from alto_client.api import AltoError, UsageProblem
from alto_client.context import AltoGroup, Context, example, json_option, pass_ctx

ENTRY_COLUMNS = [
    ("endorser", "Endorser"),
    ("status", "Status"),
    ("created", "Endorsed"),
    ("valid_until", "Valid until"),
    ("deprecated_reason", "Deprecated because"),
    ("fingerprint", "Key"),
]


class Invalid(AltoError):
    """The document breaks rules of the entry format (exit 1, like a refusal by the server)."""


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageProblem(f"cannot read {path}: {exc.strerror}") from None


def _write(path: str, data: bytes) -> None:
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise UsageProblem(f"cannot write {path}: {exc.strerror}") from None


def _problems(problems: list[md.Problem], what: str) -> Invalid:
    return Invalid(f"{what} breaks {len(problems)} rule(s)", lines=[f"{p.rule}: {p.message}" for p in problems])


file_dirs_option = click.option(
    "--file-location-dir",
    "file_dirs",
    multiple=True,
    metavar="DIR",
    help="A directory your site allows file: locations under (its MARKETPLACE_FILE_LOCATION_DIRS); repeatable.",
)


@click.group(cls=AltoGroup, help="Marketplace images: make, sign and publish metadata entries; find images.")
def image() -> None:
    pass


@image.command(
    "build-metadata",
    help="Describe an image file in a new, unsigned metadata entry: its size, SHA-1 and SHA-256 (gzip, bzip2 and "
    "xz files are read through, so they describe the image inside), the identifier, and what you say about it."
    + example(
        "alto image build-metadata ubuntu-24.04.qcow2.gz --os Ubuntu --os-version 24.04 --arch x86_64 \\\n"
        "    --format qcow2 --location https://images.example.org/ubuntu-24.04.qcow2.gz \\\n"
        "    --title 'Ubuntu 24.04 LTS' --valid-days 180 -o ubuntu.xml"
    ),
)
@click.argument("image_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--os", "os_name", help="Operating system, e.g. Ubuntu.")
@click.option("--os-version", help="e.g. 24.04.")
@click.option("--arch", help="e.g. x86_64.")
@click.option("--kind", type=click.Choice(md.KINDS), default="machine", show_default=True)
@click.option("--format", "image_format", type=click.Choice(md.FORMATS), help="Disk format.")
@click.option("--location", multiple=True, help="Where the image can be downloaded (http/https URL); repeatable.")
@click.option("--title", default="")
@click.option("--description", default="")
@click.option("--creator", default="", help="Who made the image.")
@click.option("--type", "category", default="base", show_default=True, help="The image's category (dcterms:type).")
@click.option("--valid-days", type=click.IntRange(min=1), help="Expire the endorsement after this many days.")
@click.option("--version", "image_version", default="", help="The image's version (slterms:version).")
@click.option("--hypervisor", default="", help="e.g. kvm.")
@click.option("--disks-bus", type=click.Choice(md.DISKS_BUSES))
@click.option("--email", default="", help="Endorser e-mail (signing fills it from your key).")
@click.option("-o", "--output", "out", help="Where to write the entry [default: IDENTIFIER.xml]; - for stdout.")
@json_option
@pass_ctx
def build_metadata(
    obj: Context,
    image_file: str,
    os_name: str | None,
    os_version: str | None,
    arch: str | None,
    kind: str,
    image_format: str | None,
    location: tuple[str, ...],
    title: str,
    description: str,
    creator: str,
    category: str,
    valid_days: int | None,
    image_version: str,
    hypervisor: str,
    disks_bus: str | None,
    email: str,
    out: str | None,
) -> None:
    size = os.path.getsize(image_file)
    columns = (
        TextColumn("hashing {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=output.errors, transient=True, disable=obj.as_json) as progress:
        task = progress.add_task(Path(image_file).name, total=size)
        image_bytes, checksums = md.file_checksums(image_file, on_read=lambda n: progress.advance(task, n))
    document = md.build(
        image_bytes=image_bytes,
        checksums=checksums,
        type=category,
        endorser_email=email,
        title=title,
        description=description,
        creator=creator,
        os=os_name or "",
        os_version=os_version or "",
        os_arch=arch or "",
        kind=kind,
        format=image_format or "",
        compression=md.detect_compression(image_file),
        locations=location,
        valid=datetime.now(UTC).replace(microsecond=0) + timedelta(days=valid_days) if valid_days else None,
        version=image_version,
        hypervisor=hypervisor,
        disks_bus=disks_bus or "",
    )
    identifier = md.identifier_from_sha1(checksums["SHA-1"])
    target = out or f"{identifier}.xml"
    _write(target, document)
    result = {"identifier": identifier, "bytes": image_bytes, "checksums": checksums, "output": target}
    if target != "-":
        obj.show(
            result,
            lambda: output.fields(result, [("identifier", "Identifier"), ("bytes", "Bytes"), ("output", "Written to")]),
        )


@image.command(
    help="Sign an entry with your OpenPGP key (gpg): the endorsement is filled from the key (e-mail, user ID, "
    "fingerprint, now) and the enveloped signature is appended. Use the key whose user ID carries your account's "
    "e-mail." + example("alto image sign ubuntu.xml --key 0123456789ABCDEF0123456789ABCDEF01234567")
)
@click.argument("entry_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--key", help="Fingerprint (or e-mail) of the secret key [default: profile's gpg_key, else the only one]."
)
@click.option("--email", help="Which of the key's e-mails endorses [default: the first].")
@click.option("--gnupghome", envvar="GNUPGHOME", help="The gpg keyring's directory [env GNUPGHOME].")
@click.option("--passphrase-file", type=click.File("r"), help="Read the key's passphrase from this file's first line.")
@click.option("-o", "--output", "out", help="Where to write the signed entry [default: in place]; - for stdout.")
@file_dirs_option
@json_option
@pass_ctx
def sign(
    obj: Context,
    entry_file: str,
    key: str | None,
    email: str | None,
    gnupghome: str | None,
    passphrase_file: Any,
    out: str | None,
    file_dirs: tuple[str, ...],
) -> None:
    raw = _read(entry_file)
    passphrase = passphrase_file.readline().rstrip("\n") if passphrase_file else None
    try:
        signed = gpg.sign(
            raw,
            gnupghome=gnupghome or obj.settings.gnupghome,
            key=key or obj.settings.gpg_key,
            email=email,
            passphrase=passphrase,
            file_location_dirs=file_dirs,
        )
    except md.MetadataInvalid as invalid:
        raise _problems(invalid.problems, entry_file) from None
    target = out or entry_file
    _write(target, signed)
    entry = md.parse(signed, file_location_dirs=file_dirs)
    result = {
        "identifier": entry.identifier,
        "endorser": entry.endorsement.email,
        "issuer": entry.endorsement.issuer,
        "created": md.format_date(entry.endorsement.created),
        "output": target,
    }
    if target != "-":
        obj.show(
            result,
            lambda: output.fields(
                result,
                [
                    ("identifier", "Identifier"),
                    ("endorser", "Endorser"),
                    ("issuer", "Issuer"),
                    ("created", "Endorsed"),
                    ("output", "Written to"),
                ],
            ),
        )


@image.command(
    help="Check an entry against the format's rules, the same rules and messages the server applies. With --remote "
    "the server checks it, signature included (who signed, whether the Marketplace knows the key)."
    + example("alto image validate ubuntu.xml\nalto image validate --remote ubuntu.xml")
)
@click.argument("entry_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--remote", is_flag=True, help="Ask the server's validate endpoint (signature verified too).")
@file_dirs_option
@json_option
@pass_ctx
def validate(obj: Context, entry_file: str, remote: bool, file_dirs: tuple[str, ...]) -> None:
    raw = _read(entry_file)
    if remote:
        answer = obj.api.post(
            "marketplace/entries/validate/",
            content=raw,
            headers={"Content-Type": "application/xml"},
            auth_required=False,
        )
        _show_validation(obj, answer)
        signature = answer.get("signature") or {}
        if not answer.get("valid"):
            raise Invalid(
                f"{entry_file} is refused by the server",
                lines=[f"{e['rule']}: {e['message']}" for e in answer.get("errors", [])],
            )
        if signature.get("kind") != "none" and not signature.get("verified"):
            raise Invalid(f"{entry_file}: the signature does not verify: {signature.get('message')}")
        return
    entry, problems = md.check(raw, file_location_dirs=file_dirs)
    result: dict[str, Any] = {
        "valid": not problems,
        "errors": [p.as_dict() for p in problems],
        "warnings": [w.as_dict() for w in entry.warnings] if entry else [],
        "identifier": entry.identifier if entry else None,
        "signature": {
            "kind": entry.signature_kind if entry else None,
            "verified": None,
            "message": "not verified locally: --remote asks the server",
        },
    }
    if problems or entry is None:
        if obj.as_json:
            output.emit_json(result)
        raise _problems(problems, entry_file)
    valid = entry

    def human() -> None:
        output.say(
            f"{entry_file}: valid entry for image {valid.identifier}, endorsed by {valid.endorsement.email}"
            f" ({'signed, ' + valid.signature_kind if valid.is_signed else 'not signed yet'})."
        )
        for warning in valid.warnings:
            output.say(f"  warning {warning.rule}: {warning.message}")

    obj.show(result, human)


def _show_validation(obj: Context, answer: dict) -> None:
    def human() -> None:
        signature = answer.get("signature") or {}
        output.fields(
            {
                **answer,
                "signature_kind": signature.get("kind"),
                "verified": signature.get("verified"),
                "fingerprint": signature.get("fingerprint"),
                "signature_message": signature.get("message"),
            },
            [
                ("valid", "Format valid"),
                ("identifier", "Identifier"),
                ("signature_kind", "Signature"),
                ("verified", "Verified"),
                ("fingerprint", "Key"),
                ("signature_message", "Signature check"),
            ],
        )

    obj.show(answer, human)


@image.command(help="Upload a signed entry to the Marketplace." + example("alto image upload ubuntu.xml"))
@click.argument("entry_file", type=click.Path(exists=True, dir_okay=False))
@json_option
@pass_ctx
def upload(obj: Context, entry_file: str) -> None:
    created = obj.api.post(
        "marketplace/entries/", content=_read(entry_file), headers={"Content-Type": "application/xml"}
    )
    obj.show(
        created,
        lambda: output.fields(
            created,
            [
                ("identifier", "Identifier"),
                ("endorser", "Endorser"),
                ("status", "Status"),
                ("created", "Endorsed"),
                ("url", "URL"),
            ],
        ),
    )


@image.command(
    help="Deprecate an image you endorsed: fetches your latest entry, adds the reason, signs it again with your "
    "key and uploads it as a newer entry; the image stops counting as endorsed by you. Everything else in your "
    "entry is kept. --undo un-deprecates it the same way."
    + example(
        "alto image deprecate No5o-5ea0sNMlW_75VgGJCv2AcJ --reason 'OpenSSH CVE-2024-6387; use 24.04.1'\n"
        "alto image deprecate No5o-5ea0sNMlW_75VgGJCv2AcJ --undo"
    )
)
@click.argument("identifier")
@click.option("--reason", help="Why it should no longer run (slterms:deprecated).")
@click.option("--undo", is_flag=True, help="Un-deprecate: a newer entry without the reason.")
@click.option("--key", help="Fingerprint (or e-mail) of your secret key [default: profile's gpg_key].")
@click.option("--gnupghome", envvar="GNUPGHOME", help="The gpg keyring's directory [env GNUPGHOME].")
@click.option("--passphrase-file", type=click.File("r"), help="Read the key's passphrase from this file's first line.")
@file_dirs_option
@json_option
@pass_ctx
def deprecate(
    obj: Context,
    identifier: str,
    reason: str | None,
    undo: bool,
    key: str | None,
    gnupghome: str | None,
    passphrase_file: Any,
    file_dirs: tuple[str, ...],
) -> None:
    if undo == bool(reason and reason.strip()):
        raise click.UsageError("give --reason (why the image should no longer run) or --undo")
    me = obj.api.get("accounts/me/")
    mine = me["user"]["email"].lower()
    shown = obj.api.get(f"marketplace/images/{quote(identifier, safe='')}/", auth_required=False)
    latest = next((e for e in shown["endorsements"] if e["endorser"].lower() == mine), None)
    if latest is None:
        raise UsageProblem(f"you ({mine}) have not endorsed image {identifier}")
    response = obj.api.request(
        "GET", obj.api.relative(latest["url"]), params={"format": "xml"}, headers={"Accept": "application/xml"}
    )
    document = md.redeclared(response.content, deprecated=None if undo else (reason or "").strip())
    passphrase = passphrase_file.readline().rstrip("\n") if passphrase_file else None
    # The new entry must be newer than the one it replaces, whose created time has whole seconds: right after an
    # upload, "now" may still be that second.
    previous = _endorsement_created(response.content)
    now = datetime.now(UTC).replace(microsecond=0)
    signed = gpg.sign(
        document,
        gnupghome=gnupghome or obj.settings.gnupghome,
        key=key or obj.settings.gpg_key,
        email=mine,
        passphrase=passphrase,
        now=max(now, previous + timedelta(seconds=1)) if previous is not None else now,
        file_location_dirs=file_dirs or _file_dirs_of(document),
    )
    created = obj.api.post("marketplace/entries/", content=signed, headers={"Content-Type": "application/xml"})
    obj.show(
        created,
        lambda: output.fields(
            created,
            [
                ("identifier", "Identifier"),
                ("endorser", "Endorser"),
                ("status", "Status"),
                ("deprecated_reason", "Deprecated because"),
            ],
        ),
    )


def _endorsement_created(raw: bytes) -> datetime | None:
    """The ``dcterms:created`` of a stored entry's endorsement (None if it cannot be read)."""
    element = md.xml_root(raw).find(f".//{{{md.SLREQ}}}endorsement/{{{md.DCTERMS}}}created")
    try:
        return md.parse_date((element.text or "").strip()) if element is not None else None
    except ValueError:
        return None


def _file_dirs_of(raw: bytes) -> tuple[str, ...]:
    """The directories of the document's own file: locations: an entry the server stored had them allowed there."""
    root = md.xml_root(raw)
    dirs = []
    for element in root.iter(f"{{{md.SLTERMS}}}location"):
        text = (element.text or "").strip()
        if text.startswith("file:///"):
            dirs.append(os.path.dirname(text[len("file://") :]))
    return tuple(dirs)


IMAGE_COLUMNS = [
    ("identifier", "Identifier"),
    ("title", "Title"),
    ("os", "OS"),
    ("os_version", "Version"),
    ("arch", "Arch"),
    ("kind", "Kind"),
    ("current_endorsements", "Endorsements"),
]


@image.command(
    help="Search the Marketplace (no login needed). Shows valid images unless --status says otherwise."
    + example("alto image search --os Ubuntu --arch x86_64\nalto image search -q 'grid worker' --status all --json")
)
@click.option("-q", "--query", help="Words in the title, description or identifier.")
@click.option("--os", "os_name")
@click.option("--os-version")
@click.option("--arch")
@click.option("--kind", type=click.Choice(md.KINDS))
@click.option("--endorser", help="Endorser e-mail.")
@click.option("--status", type=click.Choice(["valid", "expired", "deprecated", "all"]))
@click.option("--location", type=click.Choice(["web", "none", "all"]), help="Downloadable from the web, or not.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@pass_ctx
def search(
    obj: Context,
    query: str | None,
    os_name: str | None,
    os_version: str | None,
    arch: str | None,
    kind: str | None,
    endorser: str | None,
    status: str | None,
    location: str | None,
    limit: int,
) -> None:
    rows = list(
        obj.api.pages(
            "marketplace/images/",
            limit=limit,
            auth_required=False,
            q=query,
            os=os_name,
            os_version=os_version,
            arch=arch,
            kind=kind,
            endorser=endorser,
            status=status,
            location=location,
        )
    )
    obj.show(rows, lambda: output.table(rows, IMAGE_COLUMNS, title="Images"))


@image.command(
    help="One image and each endorser's latest entry." + example("alto image show No5o-5ea0sNMlW_75VgGJCv2AcJ")
)
@click.argument("identifier")
@json_option
@pass_ctx
def show(obj: Context, identifier: str) -> None:
    shown = obj.api.get(f"marketplace/images/{quote(identifier, safe='')}/", auth_required=False)

    def human() -> None:
        output.fields(
            shown,
            [
                ("identifier", "Identifier"),
                ("title", "Title"),
                ("description", "Description"),
                ("os", "OS"),
                ("os_version", "OS version"),
                ("arch", "Arch"),
                ("kind", "Kind"),
                ("format", "Format"),
                ("bytes", "Bytes"),
                ("sha1", "SHA-1"),
                ("current_endorsements", "Current endorsements"),
            ],
        )
        output.table(shown["endorsements"], ENTRY_COLUMNS, title="Endorsements")

    obj.show(shown, human)


@image.command(
    help="The site policy's decision on an image, rule by rule."
    + example("alto image policy No5o-5ea0sNMlW_75VgGJCv2AcJ")
)
@click.argument("identifier")
@json_option
@pass_ctx
def policy(obj: Context, identifier: str) -> None:
    decision = obj.api.get(f"marketplace/images/{quote(identifier, safe='')}/policy/", auth_required=False)

    def human() -> None:
        output.say(decision["summary"])
        output.table(decision["rules"], [("rule", "Rule"), ("outcome", "Outcome"), ("reason", "Why")], title="Rules")

    obj.show(decision, human)


def register(root: click.Group) -> None:
    root.add_command(image)
