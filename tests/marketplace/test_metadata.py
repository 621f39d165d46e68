"""The entry format (DESIGN.md §2.1): every rule refused by name, the identifier, building, hostile XML."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from xml.sax.saxutils import escape

import pytest
from lxml import etree

from marketplace import metadata
from marketplace.metadata import MetadataInvalid, Problem

EMPTY_SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
EMPTY_ID = "No5o-5ea0sNMlW_75VgGJCv2AcJ"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
EMPTY_SHA512 = (
    "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
    "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
)
OTHER_ID = metadata.identifier_from_sha1(hashlib.sha1(b"older image").hexdigest())  # noqa: S324
NEWER_ID = metadata.identifier_from_sha1(hashlib.sha1(b"newer image").hexdigest())  # noqa: S324

PROLOG = '<?xml version="1.0" encoding="UTF-8"?>\n'
# Every element DESIGN.md §2.1 names, plus a comment and elements in a namespace of their own.
FULL = f"""<?xml version="1.0" encoding="UTF-8"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
         xmlns:dcterms="http://purl.org/dc/terms/"
         xmlns:slreq="http://mp.stratuslab.eu/slreq#"
         xmlns:slterms="http://mp.stratuslab.eu/slterms#"
         xmlns:ex="http://example.org/ns/extra#"
         xml:base="http://mp.stratuslab.eu/">
  <rdf:Description rdf:about="#{EMPTY_ID}">
    <dcterms:identifier>{EMPTY_ID}</dcterms:identifier>
    <slreq:bytes>0</slreq:bytes>
    <slreq:checksum rdf:parseType="Resource">
      <slreq:algorithm>SHA-1</slreq:algorithm>
      <slreq:value>{EMPTY_SHA1}</slreq:value>
    </slreq:checksum>
    <slreq:checksum rdf:parseType="Resource">
      <slreq:algorithm>SHA-256</slreq:algorithm>
      <slreq:value>{EMPTY_SHA256}</slreq:value>
    </slreq:checksum>
    <slreq:checksum rdf:parseType="Resource">
      <slreq:algorithm>MD5</slreq:algorithm>
      <slreq:value>{EMPTY_MD5}</slreq:value>
    </slreq:checksum>
    <slreq:checksum rdf:parseType="Resource">
      <slreq:algorithm>SHA-512</slreq:algorithm>
      <slreq:value>{EMPTY_SHA512}</slreq:value>
    </slreq:checksum>
    <slreq:endorsement rdf:parseType="Resource">
      <dcterms:created>2014-05-30T12:00:00Z</dcterms:created>
      <slreq:endorser rdf:parseType="Resource">
        <slreq:email>Jane.Tester@example.org</slreq:email>
        <slreq:subject>Jane Tester &lt;jane.tester@example.org&gt;</slreq:subject>
        <slreq:issuer>OpenPGP:0123456789ABCDEF0123456789ABCDEF01234567</slreq:issuer>
      </slreq:endorser>
    </slreq:endorsement>
    <dcterms:type>base</dcterms:type>
    <dcterms:valid>2030-01-01T00:00:00Z</dcterms:valid>
    <dcterms:title>Ubuntu 22.04 base</dcterms:title>
    <dcterms:description>A minimal Ubuntu server with cloud-init.</dcterms:description>
    <dcterms:creator>Jane Tester</dcterms:creator>
    <dcterms:created>2014-05-29T08:00:00Z</dcterms:created>
    <dcterms:publisher>Example Lab</dcterms:publisher>
    <dcterms:format>qcow2</dcterms:format>
    <dcterms:compression>gz</dcterms:compression>
    <dcterms:alternative>ubuntu-22.04-base</dcterms:alternative>
    <dcterms:replaces>{OTHER_ID}</dcterms:replaces>
    <dcterms:isReplacedBy>{NEWER_ID}</dcterms:isReplacedBy>
    <dcterms:isVersionOf>{OTHER_ID}</dcterms:isVersionOf>
    <slterms:location>https://images.example.org/ubuntu-22.04.qcow2.gz</slterms:location>
    <slterms:location>file:///srv/images/ubuntu-22.04.qcow2.gz</slterms:location>
    <slterms:serial-number>7</slterms:serial-number>
    <slterms:version>1.2</slterms:version>
    <slterms:hypervisor>kvm</slterms:hypervisor>
    <slterms:inbound-port>22</slterms:inbound-port>
    <slterms:inbound-port>65535</slterms:inbound-port>
    <slterms:outbound-port>0</slterms:outbound-port>
    <slterms:icmp>255</slterms:icmp>
    <slterms:os>Ubuntu</slterms:os>
    <slterms:os-version>22.04</slterms:os-version>
    <slterms:os-arch>x86_64</slterms:os-arch>
    <slterms:deprecated>CVE-2024-0001 in the kernel</slterms:deprecated>
    <slterms:disks-bus>virtio</slterms:disks-bus>
    <slterms:kind>machine</slterms:kind>
    <!-- extension elements follow -->
    <ex:build-host>builder01.example.org</ex:build-host>
  </rdf:Description>
  <ex:Run rdf:about="#pipeline-42"><ex:number>42</ex:number></ex:Run>
</rdf:RDF>
"""


@pytest.fixture(autouse=True)
def file_location_dirs(settings):
    """FULL's file: location lies under the one directory these tests allow."""
    settings.MARKETPLACE_FILE_LOCATION_DIRS = ["/srv/images"]


def rules(raw: bytes | str) -> list[str]:
    if isinstance(raw, str):
        raw = raw.encode()
    _metadata, problems = metadata.check(raw)
    return [problem.rule for problem in problems]


def mutate(old: str, new: str, *, count: int = 1) -> str:
    assert FULL.count(old) >= count, old
    return FULL.replace(old, new, count)


def duplicate(element: str) -> str:
    """FULL with the first line containing ``element`` written twice."""
    line = next(line for line in FULL.splitlines(keepends=True) if element in line)
    return FULL.replace(line, line + line, 1)


def drop(element: str) -> str:
    """FULL without the first line containing ``element``."""
    line = next(line for line in FULL.splitlines(keepends=True) if element in line)
    return FULL.replace(line, "", 1)


def drop_block(start: str, end: str) -> str:
    begin = FULL.index(start)
    finish = FULL.index(end, begin) + len(end)
    return FULL[:begin] + FULL[finish:]


SHA1_BLOCK = FULL[FULL.index("    <slreq:checksum") : FULL.index("    <slreq:checksum", FULL.index("SHA-1"))]
SHA256_START = FULL.index("    <slreq:checksum", FULL.index("SHA-1"))
SHA256_BLOCK = FULL[SHA256_START : FULL.index("    <slreq:checksum", SHA256_START + 10)]


# ------------------------------------------------------------------------------------------------- valid documents


def test_full_document_parses_into_every_field():
    entry = metadata.parse(FULL.encode())

    assert entry.identifier == EMPTY_ID
    assert entry.bytes == 0
    assert entry.sha1 == EMPTY_SHA1
    assert entry.sha256 == EMPTY_SHA256
    assert [c.algorithm for c in entry.checksums] == ["SHA-1", "SHA-256", "MD5", "SHA-512"]
    assert entry.endorsement == metadata.Endorsement(
        email="jane.tester@example.org",
        subject="Jane Tester <jane.tester@example.org>",
        issuer="OpenPGP:0123456789ABCDEF0123456789ABCDEF01234567",
        created=dt.datetime(2014, 5, 30, 12, 0, tzinfo=dt.UTC),
    )
    assert entry.type == "base"
    assert entry.valid == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert entry.created == dt.datetime(2014, 5, 29, 8, 0, tzinfo=dt.UTC)
    assert (entry.title, entry.creator, entry.publisher) == ("Ubuntu 22.04 base", "Jane Tester", "Example Lab")
    assert (entry.format, entry.compression, entry.alternative) == ("qcow2", "gz", "ubuntu-22.04-base")
    assert (entry.replaces, entry.is_replaced_by, entry.is_version_of) == (OTHER_ID, NEWER_ID, OTHER_ID)
    assert entry.locations == (
        "https://images.example.org/ubuntu-22.04.qcow2.gz",
        "file:///srv/images/ubuntu-22.04.qcow2.gz",
    )
    assert (entry.serial_number, entry.version, entry.hypervisor) == ("7", "1.2", "kvm")
    assert (entry.inbound_ports, entry.outbound_ports, entry.icmp) == ((22, 65535), (0,), (255,))
    assert (entry.os, entry.os_version, entry.os_arch) == ("Ubuntu", "22.04", "x86_64")
    assert entry.deprecated == "CVE-2024-0001 in the kernel"
    assert (entry.disks_bus, entry.kind) == ("virtio", "machine")
    assert entry.signature_kind == "none"
    assert not entry.is_signed
    assert entry.warnings == ()


def test_unknown_namespace_elements_are_kept_and_reported():
    entry = metadata.parse(FULL.encode())

    assert set(entry.extensions) == {
        ("{http://example.org/ns/extra#}Run", "42"),
        ("{http://example.org/ns/extra#}build-host", "builder01.example.org"),
    }
    # They stay in what a signature covers.
    assert b"<ex:build-host>builder01.example.org</ex:build-host>" in metadata.signed_bytes(FULL.encode())
    assert b'<ex:Run rdf:about="#pipeline-42"><ex:number>42</ex:number></ex:Run>' in metadata.signed_bytes(
        FULL.encode()
    )


def test_full_document_round_trips_through_build():
    entry = metadata.parse(FULL.encode())

    rebuilt = metadata.build(
        image_bytes=entry.bytes,
        checksums={c.algorithm: c.value for c in entry.checksums},
        type=entry.type,
        endorser_email=entry.endorsement.email,
        title=entry.title,
        description=entry.description,
        creator=entry.creator,
        os=entry.os,
        os_version=entry.os_version,
        os_arch=entry.os_arch,
        kind=entry.kind,
        format=entry.format,
        compression=entry.compression,
        locations=entry.locations,
        valid=entry.valid,
        deprecated=entry.deprecated,
        replaces=entry.replaces,
        version=entry.version,
        hypervisor=entry.hypervisor,
        disks_bus=entry.disks_bus,
        publisher=entry.publisher,
        alternative=entry.alternative,
        is_replaced_by=entry.is_replaced_by,
        is_version_of=entry.is_version_of,
        serial_number=entry.serial_number,
        inbound_ports=entry.inbound_ports,
        outbound_ports=entry.outbound_ports,
        icmp=entry.icmp,
        created=entry.created,
    )
    endorsed = metadata.endorse(
        rebuilt,
        email=entry.endorsement.email,
        subject=entry.endorsement.subject,
        issuer=entry.endorsement.issuer,
        created=entry.endorsement.created,
    )

    assert metadata.parse(endorsed) == dataclasses.replace(entry, extensions=())


def test_build_output_parses_with_identifier_from_the_sha1():
    raw = metadata.build(
        image_bytes=10,
        checksums={"SHA-1": EMPTY_SHA1, "SHA-256": EMPTY_SHA256},
        type="grid",
        endorser_email="creator@example.org",
        os="Debian",
        inbound_ports=[22],
        deprecated="superseded by 12.5",
    )

    entry = metadata.parse(raw)

    assert entry.identifier == EMPTY_ID
    assert (entry.type, entry.os, entry.inbound_ports, entry.kind) == ("grid", "Debian", (22,), "machine")
    assert entry.deprecated == "superseded by 12.5"
    root = etree.fromstring(raw)
    assert root.get("{http://www.w3.org/XML/1998/namespace}base") == "http://mp.stratuslab.eu/"
    assert root[0].get(f"{{{metadata.RDF}}}about") == f"#{EMPTY_ID}"


def test_build_without_endorser_email_is_reported_as_email_format_until_signed():
    raw = metadata.build(image_bytes=0, checksums={"SHA-1": EMPTY_SHA1}, type="base")

    assert rules(raw) == ["email-format"]


def test_a_missing_sha256_is_a_warning_not_an_error():
    entry = metadata.parse(drop_block(SHA256_BLOCK, SHA256_BLOCK).encode())

    assert [w.rule for w in entry.warnings] == ["sha256-recommended"]


def test_compression_may_be_empty():
    assert metadata.parse(mutate("<dcterms:compression>gz<", "<dcterms:compression><").encode()).compression == ""


def test_checksum_values_are_normalised_to_lower_case():
    entry = metadata.parse(mutate(EMPTY_SHA256, EMPTY_SHA256.upper()).encode())

    assert entry.sha256 == EMPTY_SHA256


# ------------------------------------------------------------------------------------------------- the identifier


def radix64_by_bits(sha1_hex: str) -> str:
    """An independent reading of DESIGN.md §2.1: 162 bits (two zero bits, then the SHA-1), six at a time."""
    bits = format(int(sha1_hex, 16), "0162b")
    return "".join(metadata.ID_ALPHABET[int(bits[i : i + 6], 2)] for i in range(0, 162, 6))


def test_identifier_of_the_empty_file_is_the_documented_one(tmp_path):
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")

    size, checksums = metadata.file_checksums(empty)

    assert (size, checksums["SHA-1"]) == (0, EMPTY_SHA1)
    assert metadata.identifier_from_sha1(checksums["SHA-1"]) == EMPTY_ID


def test_identifier_of_a_real_file(tmp_path):
    content = b"\x7fELF" + bytes(range(256)) * 4099
    image = tmp_path / "disk.img"
    image.write_bytes(content)

    size, checksums = metadata.file_checksums(image, ("SHA-1", "SHA-256", "MD5", "SHA-512"))

    sha1 = hashlib.sha1(content).hexdigest()  # noqa: S324
    assert size == len(content)
    assert checksums == {
        "SHA-1": sha1,
        "SHA-256": hashlib.sha256(content).hexdigest(),
        "MD5": hashlib.md5(content).hexdigest(),  # noqa: S324
        "SHA-512": hashlib.sha512(content).hexdigest(),
    }
    identifier = metadata.identifier_from_sha1(sha1)
    assert identifier == radix64_by_bits(sha1)
    assert len(identifier) == 27
    assert metadata.sha1_from_identifier(identifier) == sha1
    assert identifier != metadata.identifier_from_sha1(hashlib.sha1(content + b"\0").hexdigest())  # noqa: S324


def test_sha1_with_leading_zeros_denotes_the_same_number():
    padded = "0000000000000000000000000000000000000abc"

    assert metadata.identifier_from_sha1(padded) == metadata.identifier_from_sha1("abc")
    assert metadata.identifier_from_sha1(padded) == "A" * 25 + "q8"
    assert metadata.identifier_from_sha1(padded) == radix64_by_bits(padded)


def test_entry_may_write_its_sha1_without_leading_zeros():
    sha1 = "00000f" + "1" * 34
    identifier = metadata.identifier_from_sha1(sha1)
    raw = FULL.replace(EMPTY_ID, identifier).replace(EMPTY_SHA1, sha1.lstrip("0"))

    entry = metadata.parse(raw.encode())

    assert entry.identifier == identifier
    assert entry.sha1 == sha1


@pytest.mark.parametrize("bad", ["", "xyz", "1" * 41, "-1"])
def test_identifier_derivation_refuses_what_is_not_a_sha1(bad):
    with pytest.raises(ValueError):
        metadata.identifier_from_sha1(bad)


def test_identifier_beyond_160_bits_is_not_an_identifier():
    assert not metadata.is_identifier("Q" + "A" * 26)
    assert metadata.is_identifier("P" + "_" * 26)


def test_checksums_of_a_compressed_image_describe_the_uncompressed_image(tmp_path):
    content = b"root filesystem " * 10000
    plain = tmp_path / "disk.img"
    plain.write_bytes(content)
    packed = tmp_path / "disk.img.gz"
    packed.write_bytes(gzip.compress(content))

    assert metadata.file_checksums(packed) == metadata.file_checksums(plain)
    entry = metadata.parse(metadata.build_for_file(packed, type="base", endorser_email="c@example.org"))
    assert entry.bytes == len(content)
    assert entry.compression == "gz"
    assert entry.identifier == metadata.identifier_from_sha1(hashlib.sha1(content).hexdigest())  # noqa: S324


# ------------------------------------------------------------------------------------------------- one rule each

INVALID = [
    ("identifier-mismatch", mutate(EMPTY_SHA1, "1" * 40)),
    ("identifier-format", FULL.replace(EMPTY_ID, "not-an-identifier")),
    ("about-identifier", mutate(f'rdf:about="#{EMPTY_ID}"', f'rdf:about="#{OTHER_ID}"')),
    ("about-identifier", mutate(f'rdf:about="#{EMPTY_ID}"', f'rdf:about="{EMPTY_ID}"')),
    ("about-identifier", mutate(f' rdf:about="#{EMPTY_ID}"', "")),
    ("sha1-count", FULL.replace(SHA1_BLOCK, SHA1_BLOCK + SHA1_BLOCK, 1)),
    ("sha1-count", FULL.replace(SHA1_BLOCK, "", 1)),
    ("checksum-duplicate", FULL.replace(SHA256_BLOCK, SHA256_BLOCK + SHA256_BLOCK, 1)),
    ("checksum-algorithm", mutate("<slreq:algorithm>MD5<", "<slreq:algorithm>SHA-3<")),
    ("checksum-algorithm", mutate("<slreq:algorithm>MD5<", "<slreq:algorithm>md5<")),
    ("checksum-value", mutate(EMPTY_MD5, "xyz")),
    ("checksum-value", mutate(EMPTY_MD5, EMPTY_MD5 + "1")),
    ("checksum-value", mutate(EMPTY_MD5, "")),
    ("date-format", mutate("2030-01-01T00:00:00Z", "2030-01-01 00:00:00")),
    ("date-format", mutate("2030-01-01T00:00:00Z", "2030-01-01T00:00:00+01:00")),
    ("date-format", mutate("2030-01-01T00:00:00Z", "2030-02-30T00:00:00Z")),
    ("date-format", mutate("2030-01-01T00:00:00Z", "2030-01-01T00:00:00.5Z")),
    ("date-format", mutate("2014-05-30T12:00:00Z", "30/05/2014")),
    ("date-format", mutate("2014-05-29T08:00:00Z", "yesterday")),
    ("port-range", mutate(">22<", ">65536<")),
    ("port-range", mutate(">22<", ">-1<")),
    ("port-range", mutate(">22<", ">ssh<")),
    ("port-range", mutate("<slterms:outbound-port>0<", "<slterms:outbound-port>70000<")),
    ("icmp-range", mutate(">255</slterms:icmp>", ">256</slterms:icmp>")),
    ("email-format", mutate("Jane.Tester@example.org<", "jane at example<")),
    ("email-format", mutate("Jane.Tester@example.org<", "<")),
    ("xml-base", mutate('xml:base="http://mp.stratuslab.eu/"', 'xml:base="http://example.org/"')),
    ("xml-base", mutate(' xml:base="http://mp.stratuslab.eu/"', "")),
    ("kind", mutate("<slterms:kind>machine<", "<slterms:kind>vm<")),
    ("disks-bus", mutate(">virtio<", ">sata<")),
    ("compression", mutate("<dcterms:compression>gz<", "<dcterms:compression>zip<")),
    ("format", mutate("<dcterms:format>qcow2<", "<dcterms:format>vmdk<")),
    ("bytes-format", mutate("<slreq:bytes>0<", "<slreq:bytes>1GB<")),
    ("bytes-format", mutate("<slreq:bytes>0<", "<slreq:bytes>-5<")),
    ("reference-format", mutate(f"<dcterms:replaces>{OTHER_ID}<", "<dcterms:replaces>ubuntu-20.04<")),
    ("serial-number-format", mutate(">7</slterms:serial-number>", ">seven</slterms:serial-number>")),
    ("location-format", mutate("file:///srv/images/ubuntu-22.04.qcow2.gz", "not a url")),
    ("deprecated-reason", mutate(">CVE-2024-0001 in the kernel<", "><")),
    ("issuer-format", mutate("OpenPGP:0123456789ABCDEF0123456789ABCDEF01234567", "OpenPGP:0123")),
    ("empty:type", mutate("<dcterms:type>base<", "<dcterms:type><")),
    ("parse-type:checksum", mutate('<slreq:checksum rdf:parseType="Resource">', "<slreq:checksum>")),
    ("parse-type:endorsement", mutate('<slreq:endorsement rdf:parseType="Resource">', "<slreq:endorsement>")),
    ("unknown-element:os-name", mutate("<slterms:os>", "<slterms:os-name>linux</slterms:os-name><slterms:os>")),
    ("not-text:title", mutate(">Ubuntu 22.04 base<", ">Ubuntu <ex:b>22.04</ex:b> base<")),
    ("root-element", '<ex:entry xmlns:ex="http://example.org/ns/extra#"/>'),
    ("missing:Description", drop_block("  <rdf:Description", "</rdf:Description>\n")),
    ("too-many:Description", mutate("  <ex:Run", '  <rdf:Description rdf:about="#x"/>\n  <ex:Run')),
    (
        "signature-position",
        mutate(
            "  <rdf:Description", '  <sig:Signature xmlns:sig="http://altostratus.dev/ns/pgp#"/>\n  <rdf:Description'
        ),
    ),
    ("missing:identifier", drop("<dcterms:identifier>")),
    ("missing:bytes", drop("<slreq:bytes>")),
    ("missing:type", drop("<dcterms:type>")),
    (
        "missing:checksum",
        drop_block("    <slreq:checksum", "</slreq:checksum>\n" * 1).replace(
            FULL[FULL.index("    <slreq:checksum", SHA256_START) : FULL.index("    <slreq:endorsement")], ""
        ),
    ),
    ("missing:endorsement", drop_block("    <slreq:endorsement", "</slreq:endorsement>\n")),
    ("missing:endorser", drop_block("      <slreq:endorser ", "</slreq:endorser>\n")),
    ("missing:created", drop("<dcterms:created>2014-05-30")),
    ("missing:email", drop("<slreq:email>")),
    ("missing:subject", drop("<slreq:subject>")),
    ("missing:issuer", drop("<slreq:issuer>")),
    ("missing:algorithm", drop("<slreq:algorithm>MD5")),
    ("missing:value", drop(f"<slreq:value>{EMPTY_MD5}")),
]
SINGLE_VALUED = [
    "dcterms:identifier", "slreq:bytes", "dcterms:type", "dcterms:valid", "dcterms:title", "dcterms:description",
    "dcterms:creator", "dcterms:created>2014-05-29", "dcterms:publisher", "dcterms:format", "dcterms:compression",
    "dcterms:alternative", "dcterms:replaces", "dcterms:isReplacedBy", "dcterms:isVersionOf", "slterms:serial-number",
    "slterms:version", "slterms:hypervisor", "slterms:os>", "slterms:os-version", "slterms:os-arch",
    "slterms:deprecated", "slterms:disks-bus", "slterms:kind", "slreq:email", "slreq:subject", "slreq:issuer",
    "dcterms:created>2014-05-30", "slreq:algorithm>MD5",
]  # fmt: skip


@pytest.mark.parametrize(("rule", "document"), INVALID, ids=[f"{r}-{i}" for i, (r, _d) in enumerate(INVALID)])
def test_each_broken_rule_is_refused_by_its_name(rule, document):
    assert rules(document) == [rule]
    with pytest.raises(MetadataInvalid) as refused:
        metadata.parse(document.encode())
    assert refused.value.code == rule
    assert refused.value.status == 400
    assert refused.value.problems[0].message


@pytest.mark.parametrize("element", SINGLE_VALUED)
def test_single_valued_element_given_twice_is_too_many(element):
    local = element.split(":")[1].split(">")[0]

    assert rules(duplicate(f"<{element}")) == [f"too-many:{local}"]


def test_two_endorsements_are_too_many():
    block = FULL[FULL.index("    <slreq:endorsement") : FULL.index("</slreq:endorsement>\n") + 21]

    assert rules(FULL.replace(block, block + block)) == ["too-many:endorsement"]


def test_two_signatures_are_refused():
    signature = '<sig:Signature xmlns:sig="http://altostratus.dev/ns/pgp#">x</sig:Signature>\n'
    document = FULL.replace("</rdf:RDF>", signature + signature + "</rdf:RDF>")

    assert rules(document) == ["too-many:Signature", "signature-position"]


def test_every_problem_is_reported_not_only_the_first():
    document = (
        FULL.replace(">22<", ">99999<")
        .replace("<slterms:kind>machine<", "<slterms:kind>vm<")
        .replace("2030-01-01T00:00:00Z", "2030-01-01")
        .replace(' xml:base="http://mp.stratuslab.eu/"', "")
    )

    with pytest.raises(MetadataInvalid) as refused:
        metadata.parse(document.encode())

    assert [p.rule for p in refused.value.problems] == ["xml-base", "date-format", "kind", "port-range"]
    assert refused.value.code == "xml-base"
    assert [e["rule"] for e in refused.value.extra["errors"]] == ["xml-base", "date-format", "kind", "port-range"]
    assert "and 3 more" in refused.value.message


def test_messages_name_the_element_and_the_value():
    _entry, problems = metadata.check(mutate(">22<", ">65536<").encode())

    assert problems == [
        Problem("port-range", "slterms:inbound-port is '65536'; it must be an integer from 0 to 65535.")
    ]


def test_a_signature_kind_is_read_from_the_signature_element():
    openpgp = FULL.replace("</rdf:RDF>", '<sig:Signature xmlns:sig="http://altostratus.dev/ns/pgp#"/>\n</rdf:RDF>')
    xmldsig = FULL.replace("</rdf:RDF>", '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/>\n</rdf:RDF>')

    assert metadata.parse(openpgp.encode()).signature_kind == "openpgp"
    assert metadata.parse(xmldsig.encode()).signature_kind == "xmldsig"
    assert metadata.parse(openpgp.encode()).is_signed


# ------------------------------------------------------------------------------------------------- hostile input


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP port on 127.0.0.1 that records whatever connects to it: parsing must never reach it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    seen: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            seen.append(connection.recv(1024) or b"<connected>")
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    stop.set()
    thread.join(2)
    server.close()


def refused_quickly(raw: bytes, **kwargs) -> Problem:
    started = time.perf_counter()
    _entry, problems = metadata.check(raw, **kwargs)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"refusal took {elapsed:.3f}s"
    assert len(problems) == 1
    return problems[0]


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><x>&lol9;</x></rdf:RDF>
"""


def test_billion_laughs_is_refused_as_entities():
    assert refused_quickly(BILLION_LAUGHS).rule == "entity-forbidden"


def test_external_entity_reading_a_local_file_is_refused():
    raw = FULL.replace(
        PROLOG,
        PROLOG + '<!DOCTYPE rdf:RDF [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n',
    ).replace("Ubuntu 22.04 base<", "&xxe;<")

    problem = refused_quickly(raw.encode())

    assert problem.rule == "entity-forbidden"
    assert "root:" not in problem.message


def test_external_dtd_is_refused_without_fetching_it(listener):
    port, seen = listener
    raw = FULL.replace(PROLOG, PROLOG + f'<!DOCTYPE rdf:RDF SYSTEM "http://127.0.0.1:{port}/evil.dtd">\n')

    assert refused_quickly(raw.encode()).rule == "dtd-forbidden"
    time.sleep(0.3)
    assert seen == []


def test_network_entity_reference_is_refused_without_connecting(listener):
    port, seen = listener
    raw = (
        f'<?xml version="1.0"?>\n<!-- hidden behind a comment -->\n<!DOCTYPE x [<!ENTITY % remote SYSTEM '
        f'"http://127.0.0.1:{port}/x.dtd"> %remote;]>\n<x/>'
    )

    assert refused_quickly(raw.encode()).rule == "entity-forbidden"
    time.sleep(0.3)
    assert seen == []


def test_xinclude_is_refused_without_connecting(listener):
    port, seen = listener
    raw = mutate(
        "<ex:build-host>",
        f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="http://127.0.0.1:{port}/x"/><ex:build-host>',
    )

    assert refused_quickly(raw.encode()).rule == "external-reference"
    time.sleep(0.3)
    assert seen == []


def test_undeclared_entity_reference_is_refused():
    assert refused_quickly(mutate("Ubuntu 22.04 base<", "&xxe;<").encode()).rule == "entity-forbidden"


def test_ten_thousand_deep_nesting_is_refused():
    raw = b"<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>" + b"<a>" * 10_000 + b"</a>" * 10_000
    raw += b"</rdf:RDF>"

    assert refused_quickly(raw).rule == "too-deep"


def test_nesting_deeper_than_any_entry_is_refused():
    raw = mutate("<ex:build-host>", "<ex:a>" * 40 + "</ex:a>" * 40 + "<ex:build-host>").encode()

    assert refused_quickly(raw).rule == "too-deep"


def test_over_size_document_is_refused_before_parsing(settings):
    settings.MARKETPLACE_MAX_ENTRY_BYTES = 4096
    padded = mutate("A minimal Ubuntu", "A minimal Ubuntu" + " padding" * 1000).encode()

    problem = refused_quickly(padded)

    assert problem.rule == "too-large"
    assert str(len(padded)) in problem.message and "4096" in problem.message
    assert refused_quickly(b"<" * (1024 * 1024 + 1)).rule == "too-large"  # the default limit, given explicitly
    assert metadata.check(FULL.encode(), max_bytes=len(FULL.encode()))[1] == []


def test_default_size_limit_is_one_mebibyte():
    raw = b"<x/>" + b" " * (1024 * 1024)

    assert refused_quickly(raw, max_bytes=None).rule == "too-large"


@pytest.mark.parametrize("raw", [bytes(range(256)) * 8, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"], ids=["bytes", "png"])
def test_binary_junk_is_refused_as_not_xml(raw):
    assert refused_quickly(raw).rule == "not-xml"


@pytest.mark.parametrize(
    "raw",
    [b"", b"   \n", b"hello world", b'{"identifier": "x"}', b"<rdf:RDF", b"<a></b>", b"<?xml version='1.0'", b"<!--"],
    ids=["empty", "blank", "text", "json", "unclosed", "mismatched", "open-pi", "open-comment"],
)
def test_not_xml_is_refused(raw):
    assert refused_quickly(raw).rule == "not-xml"


def test_xml_root_raises_the_same_refusals():
    with pytest.raises(MetadataInvalid) as refused:
        metadata.xml_root(BILLION_LAUGHS)

    assert refused.value.code == "entity-forbidden"


# ------------------------------------------------------------------------------------------------- signature plumbing


def test_attaching_a_signature_changes_nothing_else():
    document = metadata.endorse(
        FULL.encode(),
        email="jane.tester@example.org",
        subject="Jane",
        issuer="OpenPGP:" + "A" * 40,
        created=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    )
    armored = "-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----"

    signed = metadata.attach_signature(document, armored)

    element = signed[signed.index(b"<sig:Signature") : signed.index(b"</sig:Signature>") + 16]
    assert element.startswith(b'<sig:Signature xmlns:sig="http://altostratus.dev/ns/pgp#">')
    assert signed.replace(element + b"\n", b"", 1) == document
    assert metadata.signed_bytes(signed) == metadata.signed_bytes(document)
    assert metadata.parse(signed).signature_kind == "openpgp"


def test_signed_bytes_are_the_inclusive_c14n_with_comments_of_rdf_rdf():
    signed_bytes = metadata.signed_bytes(FULL.encode())

    assert signed_bytes.startswith(b"<rdf:RDF ")
    assert b"<!-- extension elements follow -->" in signed_bytes
    assert signed_bytes == etree.tostring(etree.fromstring(FULL.encode()), method="c14n", with_comments=True)


def test_endorse_fills_the_endorsement():
    created = dt.datetime(2024, 2, 3, 4, 5, 6, tzinfo=dt.UTC)

    entry = metadata.parse(
        metadata.endorse(
            FULL.encode(),
            email="c@example.org",
            subject="C <c@example.org>",
            issuer="OpenPGP:" + "B" * 40,
            created=created,
        )
    )

    assert entry.endorsement == metadata.Endorsement("c@example.org", "C <c@example.org>", "OpenPGP:" + "B" * 40,
                                                     created)  # fmt: skip


# ------------------------------------------------------------------------------------------------- every byte signed

SIGNATURE = '<sig:Signature xmlns:sig="http://altostratus.dev/ns/pgp#">x</sig:Signature>'


def with_signature(*, tail: str = "\n", after: str = "") -> str:
    """FULL with a signature element ending rdf:RDF, its tail text, and whatever else follows it."""
    return FULL.replace("</rdf:RDF>", SIGNATURE + tail + after + "</rdf:RDF>")


OUTSIDE_ROOT = [
    ("comment-before", FULL.replace(PROLOG, PROLOG + "<!-- unsigned -->\n")),
    (
        "pi-before",
        FULL.replace(PROLOG, PROLOG + '<?xml-stylesheet type="text/xsl" href="https://evil.example/x.xsl"?>\n'),
    ),
    ("comment-after", FULL + "<!-- unsigned -->\n"),
    ("pi-after", FULL + "<?evil unsigned?>\n"),
    ("text-after", FULL + "unsigned text\n"),
    ("element-after", FULL + '<ex:more xmlns:ex="http://example.org/ns/extra#"/>\n'),
    ("comment-after-signed", with_signature() + "<!-- unsigned -->"),
    ("byte-order-mark", "\ufeff" + FULL),
]


@pytest.mark.parametrize("document", [d for _n, d in OUTSIDE_ROOT], ids=[n for n, _d in OUTSIDE_ROOT])
def test_anything_outside_rdf_rdf_but_the_declaration_and_whitespace_is_refused(document):
    _entry, problems = metadata.check(document.encode())

    assert [p.rule for p in problems] == ["outside-root"]
    assert "outside rdf:RDF" in problems[0].message or "byte-order mark" in problems[0].message


def test_whitespace_around_rdf_rdf_and_the_declaration_are_accepted():
    assert rules("\n\n" + FULL.removeprefix(PROLOG) + "\n\t\n") == []
    assert rules("<?xml version='1.0' encoding='utf-8' standalone='yes'?>\r\n" + FULL.removeprefix(PROLOG)) == []


AFTER_SIGNATURE = [
    ("text", with_signature(tail="\nunsigned text\n")),
    ("comment", with_signature(after="<!-- unsigned -->\n")),
    ("pi", with_signature(after="<?evil unsigned?>\n")),
]


@pytest.mark.parametrize("document", [d for _n, d in AFTER_SIGNATURE], ids=[n for n, _d in AFTER_SIGNATURE])
def test_nothing_may_follow_the_signature_element(document):
    _entry, problems = metadata.check(document.encode())

    assert [p.rule for p in problems] == ["after-signature"]
    assert "sig:Signature" in problems[0].message


def test_text_after_the_signature_is_refused_because_no_signature_covers_it():
    document = with_signature(tail="\nunsigned text\n").encode()

    assert b"unsigned text" not in metadata.signed_bytes(document)
    assert rules(document) == ["after-signature"]


def test_whitespace_after_the_signature_is_accepted():
    assert rules(with_signature(tail="\n \t\r\n")) == []


# ------------------------------------------------------------------------------------------------- UTF-8 only

LATIN_1 = FULL.replace(PROLOG, '<?xml version="1.0" encoding="ISO-8859-1"?>\n')
UTF_16 = FULL.replace(PROLOG, '<?xml version="1.0" encoding="UTF-16"?>\n')
ENCODING = [
    ("latin-1-ascii-only", LATIN_1.encode()),
    ("latin-1", LATIN_1.replace(">Jane Tester<", ">Jané Tester<").encode("latin-1")),
    ("us-ascii", FULL.replace(PROLOG, '<?xml version="1.0" encoding="US-ASCII"?>\n').encode()),
    ("utf-16-bom", UTF_16.encode("utf-16")),
    ("utf-16-be-bom", b"\xfe\xff" + UTF_16.encode("utf-16-be")),
    ("utf-16-no-bom", UTF_16.encode("utf-16-le")),
    ("utf-32", FULL.replace(PROLOG, '<?xml version="1.0" encoding="UTF-32"?>\n').encode("utf-32")),
    ("undeclared-latin-1", FULL.replace(">Jane Tester<", ">Jané Tester<").encode("latin-1")),
    ("overlong-utf-8", FULL.encode().replace(b">Jane Tester<", b">Jane\xc0\xafTester<")),
    ("surrogate", FULL.encode().replace(b">Jane Tester<", b">Jane\xed\xa0\x80Tester<")),
    ("junk", b"\xff\xfe\xfd garbage without nul"),
]


@pytest.mark.parametrize("raw", [r for _n, r in ENCODING], ids=[n for n, _r in ENCODING])
def test_anything_but_utf_8_is_refused(raw):
    _entry, problems = metadata.check(raw)

    assert [p.rule for p in problems] == ["encoding"]
    assert "UTF-8" in problems[0].message


def test_utf_8_declared_in_any_letter_case_or_undeclared_is_accepted():
    accented = FULL.replace(">Jane Tester<", ">Jané Tester<")

    assert metadata.parse(accented.encode()).creator == "Jané Tester"
    assert rules(accented.replace(PROLOG, '<?xml version="1.0" encoding="utf-8"?>\n').encode()) == []
    assert rules(accented.removeprefix(PROLOG).encode()) == []


# ------------------------------------------------------------------------------------------------- extensions

XHTML = 'xmlns:h="http://www.w3.org/1999/xhtml"'
BUILD_HOST = "<ex:build-host>builder01.example.org</ex:build-host>"

VALID_EXTENSIONS = [
    ("literal", "<ex:note>plain text &lt;b&gt;</ex:note>"),
    ("language", '<ex:note xml:lang="en">text</ex:note>'),
    ("datatype", '<ex:size rdf:datatype="http://www.w3.org/2001/XMLSchema#integer">42</ex:size>'),
    ("empty", "<ex:flag/>"),
    ("resource", '<ex:seeAlso rdf:resource="https://example.org/doc"/>'),
    ("node-id", '<ex:seeAlso rdf:nodeID="b1"/>'),
    ("parse-type-resource", '<ex:builder rdf:parseType="Resource"><ex:host>b1</ex:host><ex:run>7</ex:run>'
                            "</ex:builder>"),
    ("node-element", '<ex:builder>\n <ex:Host rdf:about="https://b1.example.org/"><ex:name>b1</ex:name></ex:Host>\n</ex:builder>'),
    ("description", "<ex:builder><rdf:Description><ex:name>b1</ex:name></rdf:Description></ex:builder>"),
    ("comment", "<ex:note><!-- why -->text</ex:note>"),
    ("xhtml-text", f"<h:p {XHTML}>text only &lt;script&gt;</h:p>"),
    ("other-vocabulary", '<dcterms:subject xml:lang="en">genomics</dcterms:subject>'),
]  # fmt: skip


@pytest.mark.parametrize("element", [e for _n, e in VALID_EXTENSIONS], ids=[n for n, _e in VALID_EXTENSIONS])
def test_extension_elements_in_rdf_xml_property_form_are_kept(element):
    entry = metadata.parse(mutate(BUILD_HOST, element).encode())

    assert len(entry.extensions) == 2


INVALID_EXTENSIONS = [
    ("text-and-element", "<ex:builder>host <ex:Host/></ex:builder>", "ex:builder"),
    ("two-elements", "<ex:builder><ex:A/><ex:B/></ex:builder>", "ex:builder"),
    ("property-attribute", '<ex:builder ex:host="b1">x</ex:builder>', "ex:host"),
    ("unqualified-attribute", '<ex:link href="https://example.org/">x</ex:link>', "href"),
    ("xml-base", '<ex:seeAlso xml:base="https://evil.example/" rdf:resource="x"/>', "xml:base"),
    ("parse-type-literal", '<ex:doc rdf:parseType="Literal"><ex:b>bold</ex:b></ex:doc>', "Literal"),
    ("parse-type-collection", '<ex:list rdf:parseType="Collection"><ex:A/></ex:list>', "Collection"),
    ("resource-with-text", '<ex:seeAlso rdf:resource="https://example.org/">text</ex:seeAlso>', "ex:seeAlso"),
    ("resource-and-node-id", '<ex:seeAlso rdf:resource="https://example.org/" rdf:nodeID="b1"/>', "ex:seeAlso"),
    ("resource-with-datatype", '<ex:seeAlso rdf:resource="https://example.org/" rdf:datatype="x"/>', "ex:seeAlso"),
    ("datatype-on-node", '<ex:builder rdf:datatype="x"><ex:Host/></ex:builder>', "ex:builder"),
    ("resource-form-with-text", '<ex:builder rdf:parseType="Resource">text<ex:host/></ex:builder>', "ex:builder"),
    ("node-with-text", "<ex:builder><ex:Host>b1</ex:Host></ex:builder>", "ex:Host"),
    ("node-with-property-attribute", '<ex:builder><ex:Host ex:name="b1"/></ex:builder>', "ex:name"),
    ("node-with-two-ids", '<ex:builder><ex:Host rdf:about="#a" rdf:nodeID="b"/></ex:builder>', "ex:Host"),
    ("nested-invalid", '<ex:build rdf:parseType="Resource"><ex:host><ex:A/><ex:B/></ex:host></ex:build>', "ex:host"),
    ("xhtml-script", f"<h:div {XHTML}><h:script>alert(1)</h:script></h:div>", "h:div"),
    ("xhtml-node", f"<ex:note><h:script {XHTML}/></ex:note>", "h:script"),
    ("xhtml-deep", f'<ex:note rdf:parseType="Resource"><h:div {XHTML}><h:img/></h:div></ex:note>', "h:div"),
    ("svg", '<s:svg xmlns:s="http://www.w3.org/2000/svg"><s:script>alert(1)</s:script></s:svg>', "s:svg"),
    ("html-literal", f'<ex:note rdf:datatype="{metadata.RDF}HTML">&lt;script&gt;alert(1)&lt;/script&gt;</ex:note>',
     "HTML"),
    ("xml-literal", f'<ex:note rdf:datatype="{metadata.RDF}XMLLiteral">&lt;b/&gt;</ex:note>', "XMLLiteral"),
    ("no-namespace", "<script>alert(1)</script>", "script"),
    ("rdf-syntax-name", "<rdf:about>x</rdf:about>", "rdf:about"),
    ("rdf-li-as-node", "<ex:builder><rdf:li/></ex:builder>", "rdf:li"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("element", "named"), [(e, n) for _i, e, n in INVALID_EXTENSIONS], ids=[i for i, _e, _n in INVALID_EXTENSIONS]
)
def test_extension_elements_that_are_not_rdf_xml_properties_are_refused(element, named):
    _entry, problems = metadata.check(mutate(BUILD_HOST, element).encode())

    assert [p.rule for p in problems] == ["extension-invalid"]
    assert named in problems[0].message
    assert "rdf:Description" in problems[0].message


def test_an_extension_directly_in_rdf_rdf_must_be_a_node_element():
    document = mutate('  <ex:Run rdf:about="#pipeline-42">', "  <ex:provenance>pipeline 42</ex:provenance>\n  <ex:Run>")

    _entry, problems = metadata.check(document.encode())

    assert [p.rule for p in problems] == ["extension-invalid"]
    assert "ex:provenance" in problems[0].message and "rdf:RDF" in problems[0].message


def test_extensions_inside_the_endorser_are_checked_too():
    document = mutate("<slreq:issuer>", f"<h:div {XHTML}><h:script>alert(1)</h:script></h:div><slreq:issuer>")

    assert rules(document) == ["extension-invalid"]


# ------------------------------------------------------------------------------------------------- locations

ACCEPTED_LOCATIONS = [
    "https://images.example.org/u.img",
    "http://images.example.org:8080/u.img?version=2#top",
    "HTTPS://IMAGES.EXAMPLE.ORG/u.img",
    "file:///srv/images/u.img",
    "file:/srv/images/sub/u.img",
    "file:///srv/images/with%20space.img",
]
REFUSED_LOCATIONS = [
    ("location-scheme", "javascript:alert(1)"),
    ("location-scheme", "JaVaScRiPt:alert(document.cookie)"),
    ("location-scheme", "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="),
    ("location-scheme", "ftp://ftp.example.org/u.img"),
    ("location-scheme", "images/u.img"),
    ("location-scheme", "/srv/images/u.img"),
    ("location-scheme", "//images.example.org/u.img"),
    ("location-not-allowed", "http:///u.img"),
    ("location-not-allowed", "https:u.img"),
    ("location-not-allowed", "https://:443/u.img"),
    ("location-not-allowed", "file:///etc/passwd"),
    ("location-not-allowed", "file:///srv/images/../../etc/passwd"),
    ("location-not-allowed", "file:///srv/images/%2e%2e/secret.img"),
    ("location-not-allowed", "file:///srv/images/a/../u.img"),
    ("location-not-allowed", "file:///srv/images-other/u.img"),
    ("location-not-allowed", "file:///srv/images"),
    ("location-not-allowed", "file:///srv/images/u.img?x=1"),
    ("location-not-allowed", "file:///srv/images/%00.img"),
    ("location-not-allowed", "file://fileserver/srv/images/u.img"),
    ("location-not-allowed", "file://localhost/srv/images/u.img"),
    ("location-not-allowed", "file:srv/images/u.img"),
]


def with_location(url: str) -> str:
    return mutate("file:///srv/images/ubuntu-22.04.qcow2.gz", escape(url))


@pytest.mark.parametrize("url", ACCEPTED_LOCATIONS)
def test_http_https_and_allowed_file_locations_are_accepted(url):
    assert metadata.parse(with_location(url).encode()).locations[1] == url


@pytest.mark.parametrize(("rule", "url"), REFUSED_LOCATIONS, ids=[u for _r, u in REFUSED_LOCATIONS])
def test_locations_other_than_http_https_and_allowed_files_are_refused_naming_the_url(rule, url):
    _entry, problems = metadata.check(with_location(url).encode())

    assert [p.rule for p in problems] == [rule]
    assert repr(url) in problems[0].message


def test_no_file_location_is_allowed_when_no_directory_is_set(settings):
    settings.MARKETPLACE_FILE_LOCATION_DIRS = []

    assert rules(FULL) == ["location-not-allowed"]


def test_the_directories_can_be_given_to_the_reader_instead_of_the_setting():
    raw = with_location("file:///data/images/u.img").encode()

    assert metadata.check(raw)[1][0].rule == "location-not-allowed"
    assert metadata.check(raw, file_location_dirs=["/data/images/"])[1] == []
    assert metadata.parse(raw, file_location_dirs=["/data/images"]).locations[1] == "file:///data/images/u.img"


# ------------------------------------------------------------------------------------------------- the writer


def test_what_the_writer_makes_the_reader_accepts(tmp_path, settings):
    image = tmp_path / "images" / "disk.img"
    image.parent.mkdir()
    image.write_bytes(b"disk")
    settings.MARKETPLACE_FILE_LOCATION_DIRS = [str(image.parent)]
    built = metadata.build_for_file(
        image, type="base", endorser_email="c@example.org", locations=[image.as_uri(), "https://example.org/d.img"]
    )
    endorsed = metadata.endorse(
        built, email="c@example.org", subject="C", issuer="OpenPGP:" + "C" * 40, created=dt.datetime.now(dt.UTC)
    )
    signed = metadata.attach_signature(endorsed, "-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----")
    rebuilt = metadata.rebuild(
        metadata.parse(signed), endorser_email="d@example.org", endorsement_created=dt.datetime.now(dt.UTC)
    )

    for document in (built, endorsed, signed, rebuilt):
        assert rules(document) == [], document
        assert document.startswith(b"<?xml version='1.0' encoding='UTF-8'?>\n<rdf:RDF ")
        assert document.rstrip().endswith(b"</rdf:RDF>")
