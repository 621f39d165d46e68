"""Marketplace benchmark: image search at 10,000 and 100,000 entries, beside hand-written SQL, and upload
throughput through ``services.entry_upload`` with real gpg verification. Prints JSON.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/alto_bench .venv/bin/python bench/marketplace.py

The database (a dedicated one: it is dropped) is recreated and migrated first. Entries are
loaded with bulk inserts of realistic rows (real StratusLab documents, timelines of 1-3 entries per
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


# --- Loading ------------------------------------------------------------------------------------------------


class Loader:
    """Bulk-inserts images, endorsers and entry timelines; each call adds ``count`` entries."""

    def __init__(self, rng: random.Random) -> None:
        from django.contrib.auth import get_user_model

        from marketplace.models import Endorser, PgpKey

        self.rng = rng
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        user_model = get_user_model()
        self.owner, _ = user_model.objects.get_or_create(username="bench-owner", defaults={"email": "o@bench.org"})
        self.endorsers: list[Endorser] = []
        self.keys: list[PgpKey] = []
        for n in range(300):
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
        self.image_seq = 0

    def _document(self, identifier: str, sha1: str, fields: dict, created: dt.datetime, email: str) -> bytes:
        from marketplace import metadata

        raw = metadata.build(
            image_bytes=fields["bytes"],
            checksums={"SHA-1": sha1, "SHA-256": hashlib.sha256(sha1.encode()).hexdigest()},
            type=fields["type"],
            endorser_email=email,
            title=fields["title"],
            description=fields["description"],
            os=fields["os"],
            os_version=fields["os_version"],
            os_arch=fields["arch"],
            kind=fields["kind"],
            format=fields["format"],
            locations=fields["locations"],
            valid=fields["valid_until"],
            deprecated=fields["deprecated_reason"] or None,
            endorsement_created=created,
        )
        # A detached signature's worth of bytes, so that rows are as wide as real ones.
        return raw.replace(
            b"</rdf:RDF>",
            b'<sig:Signature xmlns:sig="http://altostratus.dev/ns/pgp#">' + b"A" * 300 + b"</sig:Signature></rdf:RDF>",
        )

    def add(self, count: int) -> None:
        from django.db import connection, transaction

        from marketplace.models import Endorser, Entry, Image

        rng = self.rng
        images: list[Image] = []
        pending: list[tuple[int, list[dict]]] = []  # (image index, entries)
        made = 0
        while made < count:
            self.image_seq += 1
            content = f"image-{self.image_seq}".encode()
            sha1 = hashlib.sha1(content).hexdigest()  # noqa: S324 - the identifier's own algorithm
            from marketplace.metadata import identifier_from_sha1

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
                            **base,
                            "endorser": endorser_index,
                            "created": created,
                            "is_latest": last,
                            "deprecated_reason": deprecated,
                            "valid_until": valid_until,
                            "title": title,
                            "description": description,
                            "locations": (f"https://images.example.org/{identifier}.{base['format']}",)
                            if rng.random() < 0.9
                            else (),
                        }
                    )
            newest = max(entries, key=lambda e: e["created"])
            images.append(
                Image(
                    identifier=identifier,
                    sha1=sha1,
                    bytes=base["bytes"],
                    title=title,
                    description=description,
                    os=base["os"],
                    os_version=base["os_version"],
                    arch=base["arch"],
                    kind=base["kind"],
                    format=base["format"],
                    first_endorsed=min(e["created"] for e in entries),
                    updated=newest["created"],
                )
            )
            pending.append((len(images) - 1, entries))
            made += len(entries)

        with transaction.atomic():
            Image.objects.bulk_create(images, batch_size=2000)
            rows: list[Entry] = []
            for index, entries in pending:
                image = images[index]
                for e in entries:
                    endorser = self.endorsers[e["endorser"]]
                    key = self.keys[e["endorser"]]
                    rows.append(
                        Entry(
                            image=image,
                            endorser=endorser,
                            created=e["created"],
                            subject=endorser.subject,
                            issuer=f"OpenPGP:{key.fingerprint}",
                            fingerprint=key.fingerprint,
                            key=key,
                            raw=self._document(image.identifier, image.sha1, e, e["created"], endorser.email),
                            uploader=self.owner,
                            is_latest=e["is_latest"],
                            valid_until=e["valid_until"],
                            deprecated=bool(e["deprecated_reason"]),
                            deprecated_reason=e["deprecated_reason"],
                            title=e["title"],
                            description=e["description"],
                            search_text=f"{e['title']}\n{e['description']}".lower(),
                            type=e["type"],
                            os=e["os"],
                            os_version=e["os_version"],
                            arch=e["arch"],
                            kind=e["kind"],
                            format=e["format"],
                            has_location=bool(e["locations"]),
                            locations=list(e["locations"]),
                            bytes=e["bytes"],
                            sha1=image.sha1,
                            sha256=hashlib.sha256(image.sha1.encode()).hexdigest(),
                            details={},
                        )
                    )
                    if len(rows) >= 2000:
                        Entry.objects.bulk_create(rows)
                        rows = []
            Entry.objects.bulk_create(rows)
            # Endorser counters, as entry_upload keeps them.
            with connection.cursor() as cursor:
                cursor.execute(
                    """
                    UPDATE marketplace_endorser d SET entry_count = s.n, first_endorsed = s.first,
                           last_endorsed = s.last
                    FROM (SELECT endorser_id, count(*) AS n, min(created) AS first, max(created) AS last
                          FROM marketplace_entry GROUP BY endorser_id) s
                    WHERE s.endorser_id = d.id
                    """
                )
        # What autovacuum does on a live database after a bulk load: statistics and the visibility map
        # (which index-only scans need).
        with connection.cursor() as cursor:
            for table in ("marketplace_entry", "marketplace_image", "marketplace_endorser", "marketplace_pgpkey"):
                cursor.execute(f"VACUUM ANALYZE {table}")
        assert Endorser.objects.count() == len(self.endorsers)


# --- Search: API beside hand-written SQL ---------------------------------------------------------------------

VALID_SQL = """
    e.is_latest AND NOT e.deprecated AND (e.valid_until IS NULL OR e.valid_until > %(now)s)
    AND (k.id IS NULL OR k.revoked_at IS NULL OR k.revoked_at > %(now)s)
"""


def queries(endorser_email: str) -> list[dict]:
    """Five typical searches: the API parameters and the hand-written SQL that answers the same page."""
    return [
        {
            "name": "os",
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
            "name": "q",
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
    ]


def hand_written(cursor, query: dict, args: dict, page_size: int) -> int:
    """The same page the API returns, as a careful hand would write it: the number of matching images
    (counted from the latest entries alone), the page of images, then that page's latest entries."""
    matching = f"""
        FROM marketplace_entry e LEFT JOIN marketplace_pgpkey k ON k.id = e.key_id WHERE {query["where"]}
    """  # noqa: S608 - fixed benchmark text
    cursor.execute(f"SELECT count(DISTINCT e.image_id) {matching}", args)  # noqa: S608
    total = cursor.fetchone()[0]
    cursor.execute(
        f"""
        SELECT i.id, i.identifier, i.title, i.description, i.os, i.os_version, i.arch, i.kind, i.format,
               i.bytes, i.sha1, i.first_endorsed, i.updated
        FROM marketplace_image i
        WHERE i.id IN (SELECT e.image_id {matching})
        ORDER BY {query["order"]} LIMIT {page_size}
        """,  # noqa: S608 - fixed benchmark text
        args,
    )
    ids = [row[0] for row in cursor.fetchall()]
    if ids:
        cursor.execute(
            """
            SELECT e.image_id, d.email, e.created, e.deprecated, e.valid_until, e.title, e.os, e.arch, e.kind,
                   e.fingerprint, k.revoked_at
            FROM marketplace_entry e JOIN marketplace_endorser d ON d.id = e.endorser_id
            LEFT JOIN marketplace_pgpkey k ON k.id = e.key_id
            WHERE e.is_latest AND e.image_id = ANY(%s) ORDER BY d.email
            """,
            [ids],
        )
        cursor.fetchall()
    return total


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
            api_total = response.json()["count"]
            with connection.cursor() as cursor:
                start = time.perf_counter()
                sql_total = hand_written(cursor, query, args, page_size)
                sql_elapsed = time.perf_counter() - start
            if round_ >= 3:  # warm-up rounds are not counted
                api_times.append(api_elapsed * 1000)
                sql_times.append(sql_elapsed * 1000)
        assert api_total == sql_total, (query["name"], api_total, sql_total)
        criteria = {k: v for k, v in query["params"].items()}
        plan_qs = selectors.image_search(**criteria)[:page_size]
        plan = plan_qs.explain(analyze=True).splitlines()
        results.append(
            {
                "query": query["name"],
                "params": query["params"],
                "matches": api_total,
                "api_ms": {"p50": round(statistics.median(api_times), 2), "p95": round(percentile(api_times, 0.95), 2)},
                "sql_ms": {"p50": round(statistics.median(sql_times), 2), "p95": round(percentile(sql_times, 0.95), 2)},
                "ratio_p50": round(statistics.median(api_times) / statistics.median(sql_times), 2),
                "ratio_p95": round(percentile(api_times, 0.95) / percentile(sql_times, 0.95), 2),
                "orm_plan_ms": plan[-1].strip(),
                "orm_plan_indexes": sorted({word for line in plan for word in line.split() if word.startswith("mp_")}),
            }
        )
    return {"entries": entries, "page_size": page_size, "repeat": repeat, "searches": results}


# --- Upload throughput --------------------------------------------------------------------------------------


def measure_upload(count: int, rng: random.Random) -> dict:
    from django.contrib.auth import get_user_model

    from marketplace import metadata, services, signing

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
            content = f"upload-bench-{n}-{rng.random()}".encode()
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
        start = time.perf_counter()
        for raw in documents:
            services.entry_upload(raw=raw, uploader=user)
        elapsed = time.perf_counter() - start
        signing.shutdown_agent(home)
    return {
        "entries": count,
        "seconds": round(elapsed, 2),
        "entries_per_second": round(count / elapsed, 1),
        "ms_per_entry": round(elapsed / count * 1000, 2),
        "signing_entries_per_second": round(count / sign_elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="entry counts to measure at (cumulative loads)")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs of each search")
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--uploads", type=int, default=300)
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL to a PostgreSQL database, e.g. postgres://postgres@127.0.0.1:5432/alto_bench")
    recreate_database(url)
    var_dir = Path(tempfile.mkdtemp(prefix="alto-bench-"))
    setup_django(var_dir)

    from django.db import connection

    rng = random.Random(20140101)  # noqa: S311 - reproducible data, not secrets
    loader = Loader(rng)
    report: dict = {"database": connection.vendor, "server_version": connection.pg_version, "runs": []}
    loaded = 0
    for size in (int(s) for s in args.sizes.split(",")):
        start = time.perf_counter()
        loader.add(size - loaded)
        from marketplace.models import Entry, Image

        loaded = Entry.objects.count()
        run = {
            "load_seconds": round(time.perf_counter() - start, 1),
            "images": Image.objects.count(),
            "latest_entries": Entry.objects.filter(is_latest=True).count(),
        }
        run.update(measure_search(loaded, args.repeat, args.page_size))
        report["runs"].append(run)
    report["upload"] = measure_upload(args.uploads, rng)
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
