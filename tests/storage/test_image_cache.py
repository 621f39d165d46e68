"""The image cache downloads a Marketplace image from its trusted locations, checks it against what the image
is (size, SHA-1, SHA-256), and keeps one verified copy per identifier for every worker; hostile servers get
nothing past the bounds and leave no file behind.

Real parts: an ``http.server`` on 127.0.0.1, real gzip/bzip2/xz files, real signed entries."""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import hashlib
import lzma
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
from django.utils import timezone

from core.errors import PermanentError, TransientError
from marketplace.models import Image
from marketplace.policy import PolicyRules
from marketplace.policy.services import policy_change
from storage import downloads, images
from storage.images import ImageCachePermanent, ImageCacheTransient, image_cache_ensure, image_cache_source
from storage.models import CachedImage
from tests.race import race
from tests.storage.conftest import Route

pytestmark = pytest.mark.django_db(transaction=True)


def content_of(seed: str, size: int = 200_000) -> bytes:
    """Deterministic bytes that do not compress (each test its own image)."""
    blocks = (hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(size // 32 + 1))
    return b"".join(blocks)[:size]


def leftovers(settings) -> list[Path]:
    """Partial files in the cache directory."""
    directory = Path(settings.IMAGE_CACHE_DIR)
    return sorted(p for p in directory.glob(".*")) if directory.exists() else []


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def failure_of(identifier: str) -> CachedImage:
    return CachedImage.objects.get(identifier=identifier)


# --- The happy paths ---------------------------------------------------------------------------------------


def test_image_over_http_is_cached_verified_and_says_where_it_came_from(publish, image_server, cache_settings):
    content = content_of("http")
    url = image_server.serve("/ubuntu.img", Route(body=content))
    identifier = publish(content, locations=[url])

    cached = image_cache_ensure(identifier=identifier)

    assert cached.state == CachedImage.State.READY
    assert Path(cached.path) == Path(cache_settings.IMAGE_CACHE_DIR) / identifier
    assert Path(cached.path).read_bytes() == content
    assert cached.bytes == len(content)
    assert cached.sha1 == hashlib.sha1(content).hexdigest()  # noqa: S324
    assert cached.sha256 == hashlib.sha256(content).hexdigest()
    source = image_cache_source(cached=cached)
    assert source.location == url
    assert source.endorser_email == "creator@example.org"
    assert source.entry is not None and source.entry.image.identifier == identifier
    assert leftovers(cache_settings) == []


def test_a_ready_copy_is_returned_without_downloading_again(publish, image_server, django_assert_num_queries):
    content = content_of("again")
    url = image_server.serve("/again.img", Route(body=content))
    identifier = publish(content, locations=[url])

    first = image_cache_ensure(identifier=identifier)
    with django_assert_num_queries(1):  # every VM after the image's first asks this
        second = image_cache_ensure(identifier=identifier)

    assert second.pk == first.pk and second.state == CachedImage.State.READY
    assert image_server.hits["/again.img"] == 1


@pytest.mark.parametrize(
    ("compression", "compress"),
    [("gz", gzip.compress), ("bz2", bz2.compress), ("xz", lzma.compress)],
)
def test_compressed_images_are_stored_uncompressed(publish, image_server, compression, compress):
    content = content_of(f"compressed-{compression}") + b"\0" * 300_000
    url = image_server.serve(f"/image.{compression}", Route(body=compress(content)))
    identifier = publish(content, locations=[url], compression=compression)

    cached = image_cache_ensure(identifier=identifier)

    assert Path(cached.path).read_bytes() == content


def test_concatenated_gzip_members_are_read_to_the_end(publish, image_server):
    content = content_of("members")
    body = gzip.compress(content[:70_000]) + gzip.compress(content[70_000:])
    url = image_server.serve("/members.gz", Route(body=body))
    identifier = publish(content, locations=[url], compression="gz")

    assert Path(image_cache_ensure(identifier=identifier).path).read_bytes() == content


def test_file_location_under_an_allowed_directory_is_copied(publish, cache_settings, tmp_path):
    content = content_of("file")
    (tmp_path / "images" / "debian.img.xz").write_bytes(lzma.compress(content))
    identifier = publish(content, locations=[(tmp_path / "images" / "debian.img.xz").as_uri()], compression="xz")

    cached = image_cache_ensure(identifier=identifier)

    assert Path(cached.path).read_bytes() == content


def test_a_redirect_to_another_http_address_is_followed(publish, image_server):
    content = content_of("moved")
    target = image_server.serve("/new/home.img", Route(body=content))
    url = image_server.serve("/old.img", Route(redirect=target))
    identifier = publish(content, locations=[url])

    cached = image_cache_ensure(identifier=identifier)

    assert Path(cached.path).read_bytes() == content
    assert image_cache_source(cached=cached).location == url


def test_when_the_first_location_is_down_the_second_is_used(publish, image_server):
    content = content_of("second")
    down = f"http://127.0.0.1:{closed_port()}/down.img"
    up = image_server.serve("/up.img", Route(body=content))
    identifier = publish(content, locations=[down, up])

    cached = image_cache_ensure(identifier=identifier)

    assert cached.location == up
    assert Path(cached.path).read_bytes() == content


# --- Refusals: each names the location and the check, and leaves no file -----------------------------------


def assert_failed(identifier, settings, *, code, url, kind):
    with pytest.raises(kind) as caught:
        image_cache_ensure(identifier=identifier)
    assert code in caught.value.codes
    assert url in str(caught.value) and code in str(caught.value)
    row = failure_of(identifier)
    assert row.state == CachedImage.State.FAILED
    assert url in row.message and code in row.message
    assert not (Path(settings.IMAGE_CACHE_DIR) / identifier).exists()
    assert leftovers(settings) == []
    return caught.value


def test_file_location_outside_the_allowed_directories_is_refused(publish, cache_settings, tmp_path):
    content = content_of("outside")
    (tmp_path / "images" / "old.img").write_bytes(content)
    url = (tmp_path / "images" / "old.img").as_uri()
    identifier = publish(content, locations=[url])
    cache_settings.MARKETPLACE_FILE_LOCATION_DIRS = [str(tmp_path / "elsewhere")]  # the site narrowed its rule

    error = assert_failed(identifier, cache_settings, code="location-not-allowed", url=url, kind=ImageCachePermanent)
    assert isinstance(error, PermanentError)


def test_a_redirect_to_a_file_url_is_refused(publish, image_server, cache_settings, tmp_path):
    content = content_of("to-file")
    (tmp_path / "images" / "secret.img").write_bytes(content)
    url = image_server.serve("/sneaky.img", Route(redirect=(tmp_path / "images" / "secret.img").as_uri()))
    identifier = publish(content, locations=[url])

    assert_failed(identifier, cache_settings, code="redirect-refused", url=url, kind=ImageCachePermanent)


def test_a_redirect_to_ftp_is_refused(publish, image_server, cache_settings):
    content = content_of("to-ftp")
    url = image_server.serve("/ftp.img", Route(redirect="ftp://127.0.0.1/image.img"))
    identifier = publish(content, locations=[url])

    assert_failed(identifier, cache_settings, code="redirect-refused", url=url, kind=ImageCachePermanent)


def test_a_server_sending_more_than_the_fixed_size_is_stopped_at_the_bound(publish, image_server, cache_settings):
    content = content_of("endless")
    url = image_server.serve("/endless.img", Route(body=content, endless=True))
    identifier = publish(content, locations=[url])

    assert_failed(identifier, cache_settings, code="too-large", url=url, kind=ImageCachePermanent)


def test_a_gzip_bomb_is_stopped_at_the_fixed_size(publish, image_server, cache_settings):
    content = content_of("bomb", 100_000)
    url = image_server.serve("/bomb.gz", Route(body=gzip.compress(b"\0" * 50_000_000)))
    identifier = publish(content, locations=[url], compression="gz")

    assert_failed(identifier, cache_settings, code="too-large", url=url, kind=ImageCachePermanent)


def test_a_server_announcing_more_than_the_fixed_size_is_refused(publish, image_server, cache_settings):
    content = content_of("announced")
    url = image_server.serve("/announced.img", Route(body=content + b"more"))
    identifier = publish(content, locations=[url])

    assert_failed(identifier, cache_settings, code="too-large", url=url, kind=ImageCachePermanent)


def test_a_short_image_is_a_size_mismatch(publish, image_server, cache_settings):
    content = content_of("short")
    url = image_server.serve("/short.img", Route(body=content[:-1]))
    identifier = publish(content, locations=[url])

    assert_failed(identifier, cache_settings, code="size-mismatch", url=url, kind=ImageCachePermanent)


def test_other_bytes_of_the_same_size_are_a_sha1_mismatch(publish, image_server, cache_settings):
    content = content_of("genuine")
    url = image_server.serve("/swapped.img", Route(body=content_of("swapped")))
    identifier = publish(content, locations=[url])

    assert_failed(identifier, cache_settings, code="sha1-mismatch", url=url, kind=ImageCachePermanent)


def test_a_wrong_sha256_is_a_sha256_mismatch(publish, image_server, cache_settings):
    content = content_of("sha256")
    checksums = {"SHA-1": hashlib.sha1(content).hexdigest(), "SHA-256": "ab" * 32}  # noqa: S324
    url = image_server.serve("/sha256.img", Route(body=content))
    identifier = publish(content, locations=[url], checksums=checksums)

    assert_failed(identifier, cache_settings, code="sha256-mismatch", url=url, kind=ImageCachePermanent)


def test_a_server_that_stalls_times_out(publish, image_server, cache_settings):
    cache_settings.IMAGE_DOWNLOAD_IO_TIMEOUT = 0.5
    content = content_of("stall")
    url = image_server.serve("/stall.img", Route(body=content, stall=True))
    identifier = publish(content, locations=[url])

    error = assert_failed(identifier, cache_settings, code="timeout", url=url, kind=ImageCacheTransient)
    assert isinstance(error, TransientError)  # a Celery task retries it
    assert failure_of(identifier).failure_transient


def test_a_server_that_trickles_is_stopped_at_the_overall_deadline(publish, image_server, cache_settings):
    cache_settings.IMAGE_DOWNLOAD_TIMEOUT = 1
    content = content_of("trickle")
    url = image_server.serve("/trickle.img", Route(body=content, trickle=True))
    identifier = publish(content, locations=[url])

    assert_failed(identifier, cache_settings, code="timeout", url=url, kind=ImageCacheTransient)


def test_server_errors_are_transient_and_missing_images_permanent(publish, image_server, cache_settings):
    content = content_of("statuses")
    busy = image_server.serve("/busy.img", Route(status=503))
    gone = image_server.serve("/gone.img", Route(status=404))
    identifier = publish(content, locations=[gone, busy])

    error = assert_failed(identifier, cache_settings, code="unreachable", url=busy, kind=ImageCacheTransient)
    assert gone in str(error) and "404" in str(error) and "503" in str(error)


def test_an_image_the_policy_denies_is_not_downloaded(publish, image_server, cache_settings):
    content = content_of("denied")
    url = image_server.serve("/denied.img", Route(body=content))
    identifier = publish(content, locations=[url])
    policy_change(actor=None, rules=PolicyRules(images_deny=(identifier,)))

    with pytest.raises(ImageCachePermanent, match="images_deny") as caught:
        image_cache_ensure(identifier=identifier)

    assert caught.value.codes == ("policy-denied",)
    assert failure_of(identifier).state == CachedImage.State.FAILED
    assert image_server.hits["/denied.img"] == 0


def test_locations_of_endorsements_the_policy_does_not_trust_are_not_tried(
    publish, image_server, cache_settings, outsider, registered
):
    content = content_of("untrusted")
    busy = image_server.serve("/creator.img", Route(status=503))
    evil = image_server.serve("/mallory.img", Route(body=content))
    registered(outsider, "outsider")
    identifier = publish(content, locations=[busy])
    publish(content, locations=[evil], signer="outsider", uploader=outsider)
    policy_change(actor=None, rules=PolicyRules(endorsers_deny=("mallory@example.org",)))

    with pytest.raises(ImageCacheTransient):
        image_cache_ensure(identifier=identifier)

    assert image_server.hits["/creator.img"] == 1
    assert image_server.hits["/mallory.img"] == 0


def test_a_failed_image_is_tried_again_by_the_next_caller(publish, image_server, cache_settings):
    content = content_of("retry")
    url = image_server.serve("/retry.img", Route(status=503))
    identifier = publish(content, locations=[url])
    with pytest.raises(ImageCacheTransient):
        image_cache_ensure(identifier=identifier)

    image_server.serve("/retry.img", Route(body=content))
    cached = image_cache_ensure(identifier=identifier)

    assert cached.state == CachedImage.State.READY and cached.message == ""


def test_the_adapter_raises_typed_errors_for_its_checks(cache_settings, image_server, tmp_path):
    content = content_of("adapter")
    url = image_server.serve("/adapter.img", Route(body=content))
    expected = downloads.Expected(bytes=len(content), sha1="0" * 40)
    limits = downloads.Limits(deadline=10, io_timeout=2)

    with pytest.raises(downloads.DownloadPermanent) as caught:
        downloads.fetch(url=url, compression="", expected=expected, target=tmp_path / "x", limits=limits, file_dirs=())

    assert (caught.value.code, caught.value.location) == ("sha1-mismatch", url)
    assert list(tmp_path.glob("*x*")) == []


# --- One cached origin per identifier ---------------------------------------------------------------------


def test_a_stale_download_claim_is_taken_over(publish, image_server, cache_settings):
    content = content_of("stale")
    url = image_server.serve("/stale.img", Route(body=content))
    identifier = publish(content, locations=[url])
    dead_claim = uuid.uuid4()
    long_ago = timezone.now() - dt.timedelta(
        seconds=cache_settings.IMAGE_DOWNLOAD_TIMEOUT + images.STALE_GRACE_SECONDS + 1
    )
    CachedImage.objects.create(
        identifier=identifier, image=Image.objects.get(identifier=identifier), claim=dead_claim, claimed_at=long_ago
    )

    cached = image_cache_ensure(identifier=identifier)

    assert cached.state == CachedImage.State.READY
    assert cached.claim != dead_claim
    assert image_server.hits["/stale.img"] == 1


def test_a_fresh_claim_of_another_worker_is_waited_for_and_its_failure_returned(
    publish, image_server, cache_settings, monkeypatch
):
    content = content_of("waiting")
    url = image_server.serve("/waiting.img", Route(body=content))
    identifier = publish(content, locations=[url])
    row = CachedImage.objects.create(
        identifier=identifier,
        image=Image.objects.get(identifier=identifier),
        claim=uuid.uuid4(),
        claimed_at=timezone.now(),
    )

    def other_worker_fails(_seconds):  # while we wait, the other worker records its failure
        CachedImage.objects.filter(pk=row.pk).update(
            state="failed", message=f"{url}: timeout: slow", failure_transient=True
        )

    monkeypatch.setattr(images, "_pause", other_worker_fails)

    with pytest.raises(ImageCacheTransient, match="timeout"):
        image_cache_ensure(identifier=identifier)
    assert image_server.hits["/waiting.img"] == 0


@pytest.mark.postgres
def test_a_second_concurrent_caller_waits_for_the_first_download(publish, image_server, cache_settings, monkeypatch):
    someone_waits = threading.Event()

    def wait_a_little(_seconds):  # the server answers only once a caller is waiting for the other's download
        someone_waits.set()
        time.sleep(0.05)

    monkeypatch.setattr(images, "_pause", wait_a_little)
    content = content_of("race", 2_000_000)
    url = image_server.serve("/race.img", Route(body=content, gate=someone_waits))
    identifier = publish(content, locations=[url])

    outcomes = race([lambda: image_cache_ensure(identifier=identifier)] * 2)

    assert all(isinstance(o, CachedImage) for o in outcomes), outcomes
    assert {o.pk for o in outcomes} == {CachedImage.objects.get(identifier=identifier).pk}
    assert all(o.state == CachedImage.State.READY for o in outcomes)
    assert image_server.hits["/race.img"] == 1
    assert someone_waits.is_set()
    assert Path(outcomes[0].path).read_bytes() == content
