"""The HEPiX image list format (``hv:imagelist``, as hepixvmitrust writes it and vmcatcher reads it): reading the
JSON an S/MIME signature covered into typed values, refusing what a subscriber cannot use with the rule's name.

A list names its endorser (``hv:endorser`` → ``hv:x509``: ``hv:dn``, ``hv:ca``, ``hv:email``, ``dc:creator``), its
own identity and dates (``dc:identifier``, ``hv:version``, ``dc:date:created``, ``dc:date:expires``) and its images
(``hv:images`` → ``hv:image``: ``dc:identifier`` a UUID, ``hv:uri``, ``hv:size``, ``sl:checksum:sha512``, and the
descriptive ``dc:title``, ``dc:description``, ``sl:os``, ``sl:osversion``, ``sl:arch``, ``hv:hypervisor``,
``hv:version``, ``hv:format``, ``sl:comments``). Nothing here touches the database or the network.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from alto_metadata import is_email_address

from core.errors import ApplicationError
from marketplace import metadata

_SHA512_RE = re.compile(r"[0-9a-fA-F]{128}")
# The images of one list; vmcatcher's largest lists (the EGI AppDB VO lists) hold a few hundred.
MAX_IMAGES = 5000
MAX_IMAGE_BYTES = 2**63 - 1  # what the database's image sizes hold
_TEXT_LIMIT = 10_000


class ImageListInvalid(ApplicationError):
    """The list's content cannot be used; ``code`` names the rule (``list-not-json``, ``list-malformed``,
    ``duplicate-image``)."""

    status = 400


@dataclass(frozen=True)
class ListEndorser:
    dn: str
    ca: str
    email: str
    creator: str


@dataclass(frozen=True)
class ListImage:
    identifier: str  # the image's UUID, lower case
    uri: str
    size: int
    sha512: str  # lower-case hex
    title: str
    description: str
    version: str
    os: str
    os_version: str
    arch: str
    hypervisor: str
    format: str
    comments: str


@dataclass(frozen=True)
class ImageList:
    identifier: str  # the list's UUID, lower case
    version: str
    created: datetime
    expires: datetime
    title: str
    description: str
    uri: str
    source: str
    endorser: ListEndorser
    images: tuple[ListImage, ...]


def parse(content: bytes) -> ImageList:
    """The image list of ``content`` (the bytes the signature covered). Raises :class:`ImageListInvalid`."""
    try:
        document = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ImageListInvalid(f"The signed content is not a JSON document: {exc}", code="list-not-json") from None
    body = _object(document, "the document").get("hv:imagelist")
    body = _object(body, "hv:imagelist")
    endorser = _object(_object(body.get("hv:endorser"), "hv:endorser").get("hv:x509"), "hv:endorser/hv:x509")
    entries = body.get("hv:images")
    if not isinstance(entries, list):
        raise _malformed("hv:imagelist/hv:images must be a list.")
    if len(entries) > MAX_IMAGES:
        raise _malformed(f"The list holds {len(entries)} images; at most {MAX_IMAGES} are accepted.")
    images = tuple(_image(_object(item, f"hv:images[{n}]").get("hv:image"), n) for n, item in enumerate(entries))
    seen: set[str] = set()
    for image in images:
        if image.identifier in seen:
            raise ImageListInvalid(
                f"The image {image.identifier} appears twice in the list: each image must have its own dc:identifier.",
                code="duplicate-image",
            )
        seen.add(image.identifier)
    created, expires = _date(body, "dc:date:created"), _date(body, "dc:date:expires")
    if expires <= created:
        raise _malformed("dc:date:expires must be later than dc:date:created.")
    email = _text(endorser, "hv:email", required=True).lower()
    if not is_email_address(email):
        raise _malformed(f"hv:email {email!r} is not an e-mail address.")
    return ImageList(
        identifier=_uuid(body, "dc:identifier", "hv:imagelist"),
        version=_text(body, "hv:version", required=True, limit=100),
        created=created,
        expires=expires,
        title=_text(body, "dc:title"),
        description=_text(body, "dc:description"),
        uri=_text(body, "hv:uri"),
        source=_text(body, "dc:source"),
        endorser=ListEndorser(
            dn=_text(endorser, "hv:dn", required=True, limit=500),
            ca=_text(endorser, "hv:ca", required=True, limit=500),
            email=email,
            creator=_text(endorser, "dc:creator"),
        ),
        images=images,
    )


def _malformed(message: str) -> ImageListInvalid:
    return ImageListInvalid(message, code="list-malformed")


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _malformed(f"{where} must be a JSON object holding hv:imagelist's fields.")
    return value


def _text(obj: dict[str, Any], key: str, *, required: bool = False, limit: int = _TEXT_LIMIT) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)  # hv:version is written as a number by some endorsers
    if not isinstance(value, str) or (required and not value.strip()):
        raise _malformed(f"{key} must be {'a non-empty' if required else 'a'} string.")
    if len(value) > limit:
        raise _malformed(f"{key} is longer than {limit} characters.")
    return value.strip()


def _date(obj: dict[str, Any], key: str) -> datetime:
    text = _text(obj, key, required=True, limit=40)
    try:
        return metadata.parse_date(text)
    except ValueError:
        raise _malformed(f"{key} {text!r} is not a date written YYYY-MM-DDTHH:MM:SSZ.") from None


def _uuid(obj: dict[str, Any], key: str, where: str) -> str:
    text = _text(obj, key, required=True, limit=100)
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise _malformed(f"{where} {key} {text!r} is not a UUID.") from None


def _image(value: Any, n: int) -> ListImage:
    image = _object(value, f"hv:images[{n}]/hv:image")
    identifier = _uuid(image, "dc:identifier", f"hv:images[{n}]")
    size = image.get("hv:size")
    if isinstance(size, str) and size.isdigit():
        size = int(size)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_IMAGE_BYTES:
        raise _malformed(f"The image {identifier}'s hv:size must be a number of bytes from 1 to {MAX_IMAGE_BYTES}.")
    sha512 = _text(image, "sl:checksum:sha512", required=True, limit=200)
    if not _SHA512_RE.fullmatch(sha512):
        raise _malformed(f"The image {identifier}'s sl:checksum:sha512 is not 128 hexadecimal digits.")
    uri = _text(image, "hv:uri", required=True, limit=2000)
    if urlsplit(uri).scheme.lower() not in ("http", "https") or not urlsplit(uri).hostname:
        raise _malformed(f"The image {identifier}'s hv:uri {uri!r} is not an http(s) URL.")
    image_format = _text(image, "hv:format", limit=50).lower()
    return ListImage(
        identifier=identifier,
        uri=uri,
        size=size,
        sha512=sha512.lower(),
        title=_text(image, "dc:title", limit=500),
        description=_text(image, "dc:description"),
        version=_text(image, "hv:version", limit=200),
        os=_text(image, "sl:os", limit=200),
        os_version=_text(image, "sl:osversion", limit=200),
        arch=_text(image, "sl:arch", limit=50),
        hypervisor=_text(image, "hv:hypervisor", limit=200),
        format=image_format if image_format in metadata.FORMATS else "",
        comments=_text(image, "sl:comments"),
    )


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """``hv:version`` in an order where numbers compare as numbers (``1.10`` after ``1.9``), as vmcatcher
    compares list versions."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.findall(r"\d+|[^\d.\-_]+", version))
