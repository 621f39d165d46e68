"""Marketplace benchmark: image search beside hand-written SQL, and upload throughput through
``services.entry_upload`` beside bare python-gnupg verification of the same documents. Prints JSON.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/alto_bench .venv/bin/python bench/marketplace.py \
        --entries 1000000 --reuse

The database (a dedicated one: it is dropped) is recreated and migrated first, unless ``--reuse`` finds the
same data set there from an earlier run. Entries are written with COPY (timelines of 1-3 entries per
endorser, deprecations, expiries, revoked keys), keeping the ``is_latest`` bookkeeping exact.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import percentile, recreate_database, setup_django  # noqa: E402

OSES = [
    ("Ubuntu", ["20.04", "22.04", "24.04"], "LTS server with cloud-init"),
    ("Debian", ["11", "12", "13"], "genericcloud image"),
    ("CentOS", ["7", "8"], "legacy base image"),
    ("AlmaLinux", ["8.9", "9.3", "9.4"], "RHEL-compatible base"),
    ("Rocky", ["8.9", "9.3", "9.4"], "RHEL-compatible base"),
    ("Fedora", ["39", "40"], "cloud base"),
    ("openSUSE", ["15.5", "15.6"], "Leap JeOS"),
    ("ScientificLinux", ["6.10", "7.9"], "grid worker node"),
    ("Windows", ["2019", "2022"], "evaluation server"),
    ("FreeBSD", ["13.3", "14.1"], "ZFS root"),
    ("Alpine", ["3.19", "3.20"], "tiny container host"),
    ("ArchLinux", ["2024.06"], "rolling release"),
]
PURPOSES = ["base", "grid", "hpc", "jupyter", "docker", "gpu", "desktop", "database", "web", "batch"]
WORDS = ["minimal", "hardened", "cuda", "slurm", "openmpi", "numbat", "bookworm", "galaxy", "cvmfs", "lustre"]


DATA_VERSION = 2  # bump when the generated data set changes: --reuse then loads it again


def loaded_data_set(url: str) -> dict | None:
    """What an earlier run left in the benchmark database (``bench_data_set``), or None."""
    import psycopg

    try:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT entries, version, seed FROM bench_data_set").fetchone()
    except psycopg.Error:
        return None
    return None if row is None else {"entries": row[0], "version": row[1], "seed": row[2]}


def record_data_set(entries: int, seed: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_data_set (entries int, version int, seed bigint)")
        cursor.execute("DELETE FROM bench_data_set")
        cursor.execute("INSERT INTO bench_data_set VALUES (%s, %s, %s)", [entries, DATA_VERSION, seed])


# --- Loading ------------------------------------------------------------------------------------------------


class Loader:
    """Writes images, endorsers and entry timelines straight into the tables with COPY (not through the upload
    path: a million gpg verifications would take hours); each call adds about ``count`` entries. The rows are
    what ``entry_upload`` would store: exact ``is_latest`` bookkeeping, endorser counters, display columns."""

    def __init__(self, rng: random.Random, *, endorsers: int = 300) -> None:
        from django.contrib.auth import get_user_model

        from marketplace import metadata
        from marketplace.models import Endorser, PgpKey

        self.rng = rng
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        user_model = get_user_model()
        self.owner, _ = user_model.objects.get_or_create(username="bench-owner", defaults={"email": "o@bench.org"})
        self.endorsers: list[Endorser] = []
        self.keys: list[PgpKey] = []
        for n in range(endorsers):
            revoked = self.now - dt.timedelta(days=30) if n % 50 == 7 else None
            key = PgpKey.objects.create(
                owner=self.owner,
                fingerprint=hashlib.sha1(f"key{n}".encode()).hexdigest().upper(),  # noqa: S324 - a fake fingerprint
                uids=[f"Endorser {n} <endorser{n}@site{n % 40}.example.org>"],
                emails=[f"endorser{n}@site{n % 40}.example.org"],
                armored="(benchmark)",
                created=self.now - dt.timedelta(days=2000),
                revoked_at=revoked,
            )
            self.keys.append(key)
            self.endorsers.append(
                Endorser.objects.create(
                    email=key.emails[0],
                    subject=key.uids[0],
                    first_endorsed=self.now - dt.timedelta(days=1500),
                    last_endorsed=self.now - dt.timedelta(days=1500),
                )
            )
        # One real document as the pattern of every row's signed bytes (searches never read them; their width
        # matters for the table's size), with a detached signature's worth of bytes.
        sample = metadata.build(
            image_bytes=1024,
            checksums={"SHA-1": "0" * 40, "SHA-256": "0" * 64},
            type="base",
            endorser_email="IDENTITY@example.org",
            title="TITLE",
            description="DESCRIPTION",
            os="OS",
            os_version="1",
            os_arch="x86_64",
            locations=("https://images.example.org/IDENTIFIER.qcow2",),
            endorsement_created=self.now,
        )
        self.raw_pattern = sample.replace(
            b"</rdf:RDF>",
            b'<sig:Signature xmlns:sig="http://altostratus.dev/ns/pgp#">' + b"A" * 300 + b"</sig:Signature></rdf:RDF>",
        )
        self.image_seq = 0

    def _images(self, count: int) -> list[tuple[dict, list[dict]]]:
        """About ``count`` entries' worth of images, each with its timelines (same distribution as the issue's)."""
        from marketplace.metadata import identifier_from_sha1

        rng = self.rng
        made = 0
        images: list[tuple[dict, list[dict]]] = []
        while made < count:
            self.image_seq += 1
            sha1 = hashlib.sha1(f"image-{self.image_seq}".encode()).hexdigest()  # noqa: S324 - the identifier's own
            identifier = identifier_from_sha1(sha1)
            os_name, versions, blurb = rng.choice(OSES)
            purpose = rng.choice(PURPOSES)
            base = {
                "os": os_name,
                "os_version": rng.choice(versions),
                "arch": rng.choices(["x86_64", "aarch64", "i686"], [80, 17, 3])[0],
                "kind": "machine" if rng.random() < 0.85 else "disk",
                "format": rng.choice(["qcow2", "raw"]),
                "type": purpose,
                "bytes": rng.randint(50, 20_000) * 1024 * 1024,
            }
            title = f"{os_name} {base['os_version']} {purpose}"
            description = f"{blurb}; {' '.join(rng.sample(WORDS, 2))}."
            entries: list[dict] = []
            for endorser_index in rng.sample(range(len(self.endorsers)), rng.choices([1, 2, 3], [60, 30, 10])[0]):
                start = self.now - dt.timedelta(days=rng.randint(30, 1400), seconds=rng.randint(0, 86400))
                steps = rng.choices([1, 2, 3], [60, 30, 10])[0]
                for step in range(steps):
                    last = step == steps - 1
                    created = start + dt.timedelta(days=20 * step)
                    deprecated = "superseded by a newer build" if last and rng.random() < 0.06 else ""
                    valid_until = None
                    if rng.random() < 0.25:
                        valid_until = created + dt.timedelta(days=rng.choice([180, 365, 730, 3650]))
                    entries.append(
                        {
                            "endorser": endorser_index,
                            "created": created,
                            "is_latest": last,
                            "deprecated_reason": deprecated,
                            "valid_until": valid_until,
                            "locations": [f"https://images.example.org/{identifier}.{base['format']}"]
                            if rng.random() < 0.9
                            else [],
                        }
                    )
            sha256 = hashlib.sha256(sha1.encode()).hexdigest()
            image = {
                **base,
                "identifier": identifier,
                "sha1": sha1,
                "sha256": sha256,
                "title": title,
                "description": description,
                "first_endorsed": min(e["created"] for e in entries),
                "updated": max(e["created"] for e in entries),
            }
            images.append((image, entries))
            made += len(entries)
        return images

    def add(self, count: int, *, batch: int = 50_000, vacuum: bool = True) -> None:
        from django.db import connection, transaction

        while count > 0:
            images = self._images(min(batch, count))
            count -= sum(len(entries) for _image, entries in images)
            with transaction.atomic(), connection.cursor() as wrapper:
                cursor = wrapper.cursor  # psycopg's own cursor, for COPY
                cursor.execute("SELECT coalesce(max(id), 0) FROM marketplace_image")
                next_id = cursor.fetchone()[0] + 1
                with cursor.copy(
                    "COPY marketplace_image (id, identifier, sha1, bytes, checksums, sha256, title, description, os,"
                    " os_version, arch, kind, format, first_endorsed, updated) FROM STDIN"
                ) as copy:
                    for n, (image, _entries) in enumerate(images):
                        image["id"] = next_id + n
                        checksums = json.dumps({"SHA-1": image["sha1"], "SHA-256": image["sha256"]})
                        copy.write_row(
                            (
                                image["id"],
                                image["identifier"],
                                image["sha1"],
                                image["bytes"],
                                checksums,
                                image["sha256"],
                                image["title"],
                                image["description"],
                                image["os"],
                                image["os_version"],
                                image["arch"],
                                image["kind"],
                                image["format"],
                                image["first_endorsed"],
                                image["updated"],
                            )
                        )
                cursor.execute(
                    "SELECT setval(pg_get_serial_sequence('marketplace_image', 'id'), (SELECT max(id) FROM"
                    " marketplace_image))"
                )
                with cursor.copy(
                    "COPY marketplace_entry (image_id, endorser_id, created, subject, issuer, fingerprint, key_id, raw,"
                    " uploaded, uploader_id, is_latest, valid_until, deprecated, deprecated_reason, title, description,"
                    " search_text, type, os, os_version, arch, kind, format, compression, has_location, locations,"
                    " bytes, sha1, sha256, details) FROM STDIN"
                ) as copy:
                    for image, entries in images:
                        for e in entries:
                            endorser = self.endorsers[e["endorser"]]
                            key = self.keys[e["endorser"]]
                            raw = (
                                self.raw_pattern.replace(b"IDENTIFIER", image["identifier"].encode())
                                .replace(b"IDENTITY@example.org", endorser.email.encode())
                                .replace(b"TITLE", image["title"].encode())
                            )
                            copy.write_row(
                                (
                                    image["id"],
                                    endorser.pk,
                                    e["created"],
                                    endorser.subject,
                                    f"OpenPGP:{key.fingerprint}",
                                    key.fingerprint,
                                    key.pk,
                                    raw,
                                    self.now,
                                    self.owner.pk,
                                    e["is_latest"],
                                    e["valid_until"],
                                    bool(e["deprecated_reason"]),
                                    e["deprecated_reason"],
                                    image["title"],
                                    image["description"],
                                    f"{image['title']}\n{image['description']}".lower(),
                                    image["type"],
                                    image["os"],
                                    image["os_version"],
                                    image["arch"],
                                    image["kind"],
                                    image["format"],
                                    "",
                                    bool(e["locations"]),
                                    json.dumps(e["locations"]),
                                    image["bytes"],
                                    image["sha1"],
                                    image["sha256"],
                                    "{}",
                                )
                            )
        with connection.cursor() as cursor:
            # Endorser counters, as entry_upload keeps them.
            cursor.execute(
                """
                UPDATE marketplace_endorser d SET entry_count = s.n, first_endorsed = s.first, last_endorsed = s.last
                FROM (SELECT endorser_id, count(*) AS n, min(created) AS first, max(created) AS last
                      FROM marketplace_entry GROUP BY endorser_id) s
                WHERE s.endorser_id = d.id
                """
            )
            # What autovacuum does on a live database after a bulk load: statistics and the visibility map
            # (which index-only scans need). Not inside a transaction (a test's), where only ANALYZE runs.
            for table in ("marketplace_entry", "marketplace_image", "marketplace_endorser", "marketplace_pgpkey"):
                cursor.execute(f"{'VACUUM ANALYZE' if vacuum else 'ANALYZE'} {table}")


# --- Search: API beside hand-written SQL ---------------------------------------------------------------------

# What a careful hand writes for "valid now": the few revoked keys read first and given as a list of ids (not a
# join per row, nor a subquery the planner would charge to every probe of a nested loop).
VALID_SQL = """
    e.is_latest AND NOT e.deprecated AND (e.valid_until IS NULL OR e.valid_until > %(now)s)
    AND (e.key_id IS NULL OR NOT e.key_id = ANY(%(revoked)s))
"""
REVOKED_SQL = "SELECT coalesce(array_agg(id), '{}') FROM marketplace_pgpkey WHERE revoked_at <= %(now)s"


def queries(endorser_email: str) -> list[dict]:
    """The issue's five searches and one combining three filters: the API parameters and the hand-written SQL
    that answers the same page."""
    return [
        {
            "name": "os=ubuntu",
            "params": {"os": "ubuntu"},
            "where": f"lower(e.os) = 'ubuntu' AND {VALID_SQL}",
            "order": "i.updated DESC, i.id DESC",
        },
        {
            "name": "endorser",
            "params": {"endorser": endorser_email},
            "where": "e.endorser_id = (SELECT id FROM marketplace_endorser WHERE email = %(email)s) AND "  # noqa: S608
            + VALID_SQL,
            "order": "i.updated DESC, i.id DESC",
        },
        {
            "name": "q=numbat",
            "params": {"q": "numbat"},
            "where": f"e.search_text LIKE '%%numbat%%' AND {VALID_SQL}",
            "order": "i.updated DESC, i.id DESC",
        },
        {
            "name": "kind+arch",
            "params": {"kind": "machine", "arch": "aarch64"},
            "where": f"lower(e.arch) = 'aarch64' AND e.kind = 'machine' AND {VALID_SQL}",
            "order": "i.updated DESC, i.id DESC",
        },
        {
            "name": "status=all ordering=title",
            "params": {"status": "all", "ordering": "title"},
            "where": "e.is_latest",
            "order": "i.title ASC, i.id ASC",
        },
        {
            "name": "os+arch+kind",
            "params": {"os": "debian", "arch": "aarch64", "kind": "disk"},
            "where": f"lower(e.os) = 'debian' AND lower(e.arch) = 'aarch64' AND e.kind = 'disk' AND {VALID_SQL}",
            "order": "i.updated DESC, i.id DESC",
        },
    ]


PAGE_IMAGE_SQL = """
    SELECT i.id, i.identifier, i.title, i.description, i.os, i.os_version, i.arch, i.kind, i.format, i.bytes,
           i.sha1, i.checksums, i.first_endorsed, i.updated
    FROM marketplace_image i
    WHERE EXISTS (SELECT 1 FROM marketplace_entry e WHERE e.image_id = i.id AND {where})
    ORDER BY {order} LIMIT {limit} OFFSET {offset}
"""
GATHERED_PAGE_SQL = """
    WITH matching AS MATERIALIZED ({distinct})
    SELECT i.id, i.identifier, i.title, i.description, i.os, i.os_version, i.arch, i.kind, i.format, i.bytes,
           i.sha1, i.checksums, i.first_endorsed, i.updated, (SELECT count(*) FROM matching)
    FROM marketplace_image i
    WHERE i.id IN (SELECT image_id FROM matching)
    ORDER BY {order} LIMIT {limit} OFFSET {offset}
"""
PAGE_ENTRIES_SQL = """
    SELECT e.image_id, i.identifier, d.email, e.subject, e.created, e.is_latest, e.deprecated_reason, e.valid_until,
           e.title, e.type, e.os, e.os_version, e.arch, e.kind, e.format, e.bytes, e.has_location, e.fingerprint,
           CASE WHEN k.revoked_at <= %(now)s THEN 'revoked' WHEN e.deprecated THEN 'deprecated'
                WHEN e.valid_until <= %(now)s THEN 'expired' ELSE 'valid' END,
           k.revoked_at IS NOT NULL
    FROM marketplace_entry e JOIN marketplace_endorser d ON d.id = e.endorser_id
    JOIN marketplace_image i ON i.id = e.image_id LEFT JOIN marketplace_pgpkey k ON k.id = e.key_id
    WHERE e.is_latest AND e.image_id = ANY(%(ids)s) ORDER BY d.email
"""


def hand_written(cursor, query: dict, args: dict, page_size: int, *, page: int = 1, exact_up_to: int) -> dict:
    """The same page the API returns, as a careful hand would write it, with the same count semantics: the number
    of matching images (counted from the latest entries alone; when the planner expects more than ``exact_up_to``
    images or a costly count, its estimate of the matching entries times the ratio of images to latest entries),
    the page of images (one more row, to know whether another page follows), then the page's latest entries with
    their status.
    Returns the count, whether it is estimated, and the page's rows."""
    from marketplace.selectors import (
        EXACT_COUNT_COST_UP_TO,
        EXPECTED_IMAGES_SQL,
        Expected,
        expected_images,
        planner_estimate,
        walk_pays,
    )

    if "%(revoked)s" in query["where"]:
        cursor.execute(REVOKED_SQL, args)
        args = {**args, "revoked": cursor.fetchone()[0]}
    distinct = f"SELECT DISTINCT e.image_id FROM marketplace_entry e WHERE {query['where']}"  # noqa: S608
    cursor.execute(f"EXPLAIN (FORMAT JSON) {distinct}", args)
    matching, cost = planner_estimate(cursor.fetchone()[0])
    cursor.execute(EXPECTED_IMAGES_SQL)
    images, latest = cursor.fetchone()
    expected = expected_images(matching, images=images, latest=latest)
    offset = (page - 1) * page_size
    # The page found the way that pays, as the API decides it: walking the images in order, or from every match
    # gathered first (which counts them in the same query).
    total_images = round(images) if images and images > 0 else expected
    if walk_pays(Expected(expected, cost, total_images), end=offset + page_size + 1):
        sql = PAGE_IMAGE_SQL.format(where=query["where"], order=query["order"], limit=page_size + 1, offset=offset)
        cursor.execute(sql, args)
        images = cursor.fetchall()
        if offset == 0 and len(images) <= page_size:  # a first page holding the whole answer is its own count
            total, estimated = len(images), False
        elif expected > exact_up_to or cost > EXACT_COUNT_COST_UP_TO:
            total, estimated = expected, True
        else:
            cursor.execute(f"SELECT count(*) FROM ({distinct}) s", args)  # noqa: S608
            total, estimated = cursor.fetchone()[0], False
    else:
        sql = GATHERED_PAGE_SQL.format(distinct=distinct, order=query["order"], limit=page_size + 1, offset=offset)
        cursor.execute(sql, args)
        rows = cursor.fetchall()
        images = [row[:-1] for row in rows]
        if rows:
            total, estimated = rows[0][-1], False
        else:
            cursor.execute(f"SELECT count(*) FROM ({distinct}) s", args)  # noqa: S608
            total, estimated = cursor.fetchone()[0], False
    has_next = len(images) > page_size
    images = images[:page_size]
    entries = []
    if images:
        cursor.execute(PAGE_ENTRIES_SQL, {**args, "ids": [row[0] for row in images]})
        entries = cursor.fetchall()
    return {"count": total, "estimated": estimated, "images": images, "entries": entries, "has_next": has_next}


def measure_search(entries: int, repeat: int, page_size: int) -> dict:
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from marketplace import selectors
    from marketplace.models import Endorser

    client = Client()
    busiest = Endorser.objects.order_by("-entry_count").first()
    assert busiest is not None
    results = []
    for query in queries(busiest.email):
        params = {**query["params"], "page_size": page_size}
        api_times, sql_times = [], []
        args = {"now": timezone.now(), "email": busiest.email}
        for round_ in range(repeat + 3):
            start = time.perf_counter()
            response = client.get("/api/v1/marketplace/images/", params)
            api_elapsed = time.perf_counter() - start
            assert response.status_code == 200, response.content[:300]
            body = response.json()
            with connection.cursor() as cursor:
                start = time.perf_counter()
                page = hand_written(cursor, query, args, page_size, exact_up_to=selectors.EXACT_COUNT_UP_TO)
                sql_elapsed = time.perf_counter() - start
            if round_ >= 3:  # warm-up rounds are not counted
                api_times.append(api_elapsed * 1000)
                sql_times.append(sql_elapsed * 1000)
        assert [r["identifier"] for r in body["results"]] == [row[1] for row in page["images"]], query["name"]
        if not page["estimated"]:
            assert body["count"] == page["count"], (query["name"], body["count"], page["count"])
        assert body["count_is_estimate"] == page["estimated"], query["name"]
        criteria = selectors.SearchCriteria(**{k: v for k, v in query["params"].items() if k != "ordering"})
        found = selectors.image_search_entries(criteria, now=timezone.now())
        plan_qs = selectors._images_found(found, images=None, ordering=query["params"].get("ordering", "-updated"))
        plan = plan_qs[:page_size].explain(analyze=True).splitlines()
        api_p95, sql_p95 = percentile(api_times, 0.95), percentile(sql_times, 0.95)
        results.append(
            {
                "query": query["name"],
                "params": query["params"],
                "matches": body["count"],
                "count_is_estimate": body["count_is_estimate"],
                "api_ms": {"p50": round(statistics.median(api_times), 2), "p95": round(api_p95, 2)},
                "sql_ms": {"p50": round(statistics.median(sql_times), 2), "p95": round(sql_p95, 2)},
                "ratio_p50": round(statistics.median(api_times) / statistics.median(sql_times), 2),
                "ratio_p95": round(api_p95 / sql_p95, 2),
                "page_plan_ms": plan[-1].strip(),
                "page_plan_indexes": sorted({word for line in plan for word in line.split() if word.startswith("mp_")}),
            }
        )
    return {"entries": entries, "page_size": page_size, "repeat": repeat, "searches": results}


# --- Upload throughput --------------------------------------------------------------------------------------


def measure_upload(count: int, rng: random.Random, *, jobs: int) -> dict:
    """Half the documents uploaded one by one through ``entry_upload``, half through the bulk import (``jobs``
    verifying threads); each beside bare python-gnupg verification of the same documents, at the same parallelism,
    in the same run."""
    from django.contrib.auth import get_user_model

    from marketplace import metadata, services, signing
    from marketplace.services.imports import entries_import
    from marketplace.sources import Document

    with tempfile.TemporaryDirectory(prefix="alto-bench-gpg-") as tmp:
        home = Path(tmp)
        home.chmod(0o700)
        gpg = ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]
        uid = "Bench Creator <bench.creator@example.org>"
        subprocess.run(
            [*gpg, "--faked-system-time", "20200101T000000!", "--quick-gen-key", uid, "ed25519", "sign", "never"],
            check=True,
            capture_output=True,
        )
        armored = subprocess.run([*gpg, "--armor", "--export", uid], check=True, capture_output=True).stdout.decode()
        user, _ = get_user_model().objects.get_or_create(
            username="bench-creator", defaults={"email": "bench.creator@example.org"}
        )
        key = services.pgp_key_register(actor=user, armored=armored)
        base = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
        documents = []
        sign_start = time.perf_counter()
        for n in range(count):
            content = f"upload-bench-{n}-{uuid.uuid4()}".encode()  # new images on every run, reused data set or not
            document = metadata.build(
                image_bytes=len(content),
                checksums={
                    "SHA-1": hashlib.sha1(content).hexdigest(),  # noqa: S324
                    "SHA-256": hashlib.sha256(content).hexdigest(),
                },
                type="base",
                title=f"Upload bench {n}",
                os="Ubuntu",
                os_version="24.04",
                os_arch="x86_64",
                locations=(f"https://images.example.org/bench-{n}.qcow2",),
            )
            documents.append(
                signing.sign(document, gnupghome=home, fingerprint=key.fingerprint, now=base + dt.timedelta(minutes=n))
            )
        sign_elapsed = time.perf_counter() - sign_start
        half = len(documents) // 2
        uploads, imports = documents[:half], documents[half:]
        # Each path between two measurements of its bare verification, right before and right after it (the
        # machine's load moves): the ratio is to their mean.
        bare_around = [measure_bare_verification(uploads, jobs=1)]
        start = time.perf_counter()
        for raw in uploads:
            services.entry_upload(raw=raw, uploader=user)
        elapsed = time.perf_counter() - start
        bare_around.append(measure_bare_verification(uploads, jobs=1))
        bare_parallel_around = [measure_bare_verification(imports, jobs=jobs)]
        start = time.perf_counter()
        summary = entries_import(
            [Document(f"{n}.xml", raw) for n, raw in enumerate(imports)], source="bench", jobs=jobs
        )
        import_elapsed = time.perf_counter() - start
        bare_parallel_around.append(measure_bare_verification(imports, jobs=jobs))
        assert summary.accepted == len(imports), summary
        bare, bare_parallel = statistics.mean(bare_around), statistics.mean(bare_parallel_around)
        signing.shutdown_agent(home)
    upload_rate = len(uploads) / elapsed
    import_rate = len(imports) / import_elapsed
    return {
        "entries": count,
        "upload": {
            "entries": len(uploads),
            "entries_per_second": round(upload_rate, 1),
            "ms_per_entry": round(elapsed / len(uploads) * 1000, 2),
            "bare_gpg_verify_per_second": round(bare, 1),
            "bare_gpg_verify_per_second_before_after": [round(rate, 1) for rate in bare_around],
            "ratio_to_gpg_bound": round(upload_rate / bare, 2),
        },
        "import": {
            "entries": len(imports),
            "jobs": jobs,
            "entries_per_second": round(import_rate, 1),
            "bare_gpg_verify_per_second_same_jobs": round(bare_parallel, 1),
            "bare_same_jobs_before_after": [round(rate, 1) for rate in bare_parallel_around],
            "ratio_to_gpg_bound": round(import_rate / bare_parallel, 2),
            "entries_per_second_per_core": round(import_rate / jobs, 1),
            "ratio_per_core_to_one_core_gpg_bound": round(import_rate / jobs / bare, 2),
        },
        "signing_entries_per_second": round(count / sign_elapsed, 1),
    }


def measure_bare_verification(documents: list[bytes], *, jobs: int) -> float:
    """Entries per second that python-gnupg alone verifies in ``jobs`` threads: the same documents' detached
    signatures against the same trusted keyring, signed bytes and signature files prepared beforehand (the
    gpg-bound limit)."""
    from concurrent.futures import ThreadPoolExecutor

    import gnupg
    from lxml import etree

    from marketplace import metadata
    from marketplace.signing import trusted_home

    gpg = gnupg.GPG(gnupghome=str(trusted_home()))
    with tempfile.TemporaryDirectory(prefix="alto-bench-sigs-") as tmp:
        prepared = []
        for n, raw in enumerate(documents):
            root = metadata.xml_root(raw)
            element = metadata.signature_element(root)
            root.remove(element)
            path = Path(tmp) / f"{n}.sig"
            path.write_text(element.text.strip(), encoding="ascii")
            prepared.append((str(path), etree.tostring(root, method="c14n", with_comments=True)))
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            assert all(pool.map(lambda item: gpg.verify_data(*item).valid, prepared))
        elapsed = time.perf_counter() - start
    return len(prepared) / elapsed


def measure_console(repeat: int) -> dict:
    """The staff console's verdict filters: the kept verdicts written first (only the stale ones on a reused data
    set), then each filter's first page timed as the browser asks for it."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from marketplace.models import Image
    from marketplace.policy import verdicts

    start = time.perf_counter()
    written = verdicts.verdicts_refresh()
    refresh_seconds = time.perf_counter() - start
    if written:  # what autovacuum does after a rewrite of many rows: the visibility map and the dead rows
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE marketplace_image")
    staff, _ = get_user_model().objects.get_or_create(
        username="bench-staff", defaults={"email": "staff@bench.org", "is_staff": True}
    )
    client = Client()
    client.force_login(staff)
    results = []
    for verdict in ("denied", "warnings", "allowed"):
        times = []
        for round_ in range(repeat + 3):
            start = time.perf_counter()
            response = client.get("/marketplace/console/", {"verdict": verdict})
            if round_ >= 3:
                times.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200
        results.append(
            {
                "verdict": verdict,
                "images": Image.objects.filter(verdict=verdict).count(),
                "ms": {"p50": round(statistics.median(times), 2), "p95": round(percentile(times, 0.95), 2)},
            }
        )
    return {
        "images": Image.objects.count(),
        "verdicts_written": written,
        "verdicts_refresh_seconds": round(refresh_seconds, 1),
        "filters": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000, help="entries in the data set searched")
    parser.add_argument(
        "--reuse", action="store_true", help="keep the data set an earlier run left in the database when it matches"
    )
    parser.add_argument("--repeat", type=int, default=30, help="timed runs of each search")
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--uploads", type=int, default=300, help="entries uploaded (0: no upload measurement)")
    parser.add_argument("--no-search", action="store_true", help="measure no searches")
    parser.add_argument("--no-console", action="store_true", help="measure no console verdict filters")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="verifying threads of the import")
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL to a PostgreSQL database, e.g. postgres://postgres@127.0.0.1:5432/alto_bench")
    seed = 20140101
    wanted = {"entries": args.entries, "version": DATA_VERSION, "seed": seed}
    reused = args.reuse and loaded_data_set(url) == wanted
    if not reused:
        recreate_database(url)
    var_dir = Path(tempfile.mkdtemp(prefix="alto-bench-"))
    setup_django(var_dir)

    from django.db import connection

    from marketplace.models import Entry, Image

    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    report: dict = {"database": connection.vendor, "server_version": connection.pg_version, "reused": reused}
    if not args.no_search:
        start = time.perf_counter()
        if not reused:
            Loader(rng).add(args.entries)
            record_data_set(args.entries, seed)
        run = {
            "load_seconds": round(time.perf_counter() - start, 1),
            "images": Image.objects.count(),
            "latest_entries": Entry.objects.filter(is_latest=True).count(),
        }
        run.update(measure_search(Entry.objects.count(), args.repeat, args.page_size))
        report["search"] = run
    if not args.no_console:
        report["console"] = measure_console(args.repeat)
    if args.uploads:
        report["ingestion"] = measure_upload(args.uploads, rng, jobs=args.jobs)
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
