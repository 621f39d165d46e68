"""Each image's verdict under the active policy, kept in ``Image.verdict`` so that the console filters by verdict
with an index instead of evaluating every image (issue 15).

A kept verdict is trusted only while it was reached under the active policy (``verdict_policy``) and its clock
has not run out (``verdict_until``: the earliest expiry of a current endorsement); anything else is *stale* and
readers evaluate it themselves, so that a filter is never wrong, only slower until the verdicts are rewritten:
- an entry arrives: ``services.entry_upload`` rewrites the image's verdict under its row lock;
- a key is revoked: ``services.pgp_key_revoke`` rewrites the verdicts of the images it signed for;
- the policy changes: every verdict is stale at once (another policy id); a task rewrites them all;
- an endorsement expires: the periodic task ``marketplace.verdicts_refresh`` rewrites those past ``verdict_until``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from marketplace import selectors
from marketplace.models import Entry, Image, TrustChange
from marketplace.policy.evaluation import active_rules, evaluate
from marketplace.policy.rules import Decision, PolicyRules

CHUNK = 500
# A rewrite of more verdicts than this refreshes the images' table statistics.
ANALYZE_AFTER = 2_000


def verdict_of(decision: Decision) -> str:
    """The console's verdict classes: denied, allowed despite failed rules (warn or audit mode), allowed."""
    if not decision.allowed:
        return Image.Verdict.DENIED
    return Image.Verdict.WARNINGS if decision.failures else Image.Verdict.ALLOWED


def active_policy_id() -> int:
    """The id verdicts are reached under: the active policy's row, 0 for the default rules."""
    row = selectors.policy_active()
    return row.pk if row is not None else 0


def _clock_runs_out(image: Image, *, now: dt.datetime) -> dt.datetime | None:
    """When the clock may change the verdict: the earliest expiry among the image's current endorsements."""
    expiries = [
        e.valid_until
        for e in image.latest_entries  # type: ignore[attr-defined]
        if e.valid_until is not None and selectors.entry_status(e, now=now) == Entry.Status.VALID
    ]
    return min(expiries, default=None)


def fresh_q(*, policy_id: int, now: dt.datetime) -> Q:
    """Images whose kept verdict holds now."""
    return ~Q(verdict="") & Q(verdict_policy=policy_id) & (Q(verdict_until__isnull=True) | Q(verdict_until__gt=now))


def stale_q(*, policy_id: int, now: dt.datetime) -> Q:
    """Images whose kept verdict cannot be trusted now (policy ids only grow: the active one is the newest)."""
    return Q(verdict="") | Q(verdict_policy__lt=policy_id) | Q(verdict_policy__gt=policy_id) | Q(verdict_until__lte=now)


def _announce_if_lost(image: Image, *, before: str, decision: Decision, cause: str) -> None:
    """Record (in the caller's transaction) that ``image`` went from allowed to denied, for delivery after commit.
    An image never judged before (no kept verdict) announces nothing: nothing ran from it on a verdict."""
    if before not in (Image.Verdict.ALLOWED, Image.Verdict.WARNINGS) or decision.allowed:
        return
    TrustChange.objects.create(image=image, cause=cause, summary=decision.summary, verdict_before=before)
    transaction.on_commit(_deliver_later)


def _deliver_later() -> None:
    from marketplace.tasks import trust_changes_deliver

    trust_changes_deliver.delay()


def _refresh_cause(image: Image, *, policy_id: int) -> str:
    """Why a stale verdict is rewritten: a policy other than the one it was reached under, or the clock."""
    return TrustChange.Cause.POLICY if image.verdict_policy != policy_id else TrustChange.Cause.EXPIRED


def _write(
    images: Iterable[Image], *, rules: PolicyRules, policy_id: int, now: dt.datetime, cause: str | None = None
) -> int:
    """Evaluate ``images`` (latest entries prefetched, rows locked) and store their verdicts, announcing those that
    turn denied (``cause``, or the refresh's own reason per image)."""
    fingerprints = selectors.site_key_fingerprints()
    changed = []
    for image in images:
        decision = evaluate(image, rules=rules, now=now, site_fingerprints=fingerprints)
        _announce_if_lost(
            image,
            before=image.verdict,
            decision=decision,
            cause=cause or _refresh_cause(image, policy_id=policy_id),
        )
        image.verdict = verdict_of(decision)
        image.verdict_policy = policy_id
        image.verdict_until = _clock_runs_out(image, now=now)
        changed.append(image)
    Image.objects.bulk_update(changed, ["verdict", "verdict_policy", "verdict_until"], batch_size=CHUNK)
    return len(changed)


def image_verdict_write_locked(
    image: Image,
    *,
    now: dt.datetime,
    cause: str = TrustChange.Cause.ENDORSEMENT,
) -> None:
    """Rewrite one image's verdict under the active policy, in at most five queries (the upload's path);
    ``cause``: why, should the image turn denied.

    Precondition: the image's row lock is held (``entry_upload`` holds it), so no other writer interleaves."""
    row = selectors.policy_active()
    rules = PolicyRules.from_json(row.rules) if row is not None else PolicyRules()
    image.latest_entries = list(  # type: ignore[attr-defined]
        Entry.objects.filter(image=image, is_latest=True)
        .select_related("endorser", "key")
        .defer("raw", "details", "search_text", "description")
        .order_by("endorser__email")
    )
    decision = evaluate(image, rules=rules, now=now, site_fingerprints=selectors.site_key_fingerprints())
    _announce_if_lost(image, before=image.verdict, decision=decision, cause=cause)
    image.verdict = verdict_of(decision)
    image.verdict_policy = row.pk if row is not None else 0
    image.verdict_until = _clock_runs_out(image, now=now)
    Image.objects.filter(pk=image.pk).update(
        verdict=image.verdict, verdict_policy=image.verdict_policy, verdict_until=image.verdict_until
    )


def verdicts_judge_locked(images: Sequence[Image], *, now: dt.datetime, causes: Mapping[str, str]) -> None:
    """Judge many images at once (a bulk import's batch) under the active policy, each from its ``latest_entries``
    (endorser and key set) as the caller holds them, and set their verdict columns for the caller to write in one
    statement: the active policy and the site keys read once, which image claimed each SHA-256 first in one query.
    An image without an id is about to be written: any image already stored claimed its SHA-256 before it, and so
    did those before it in ``images``. ``causes`` (by identifier): why, should an image turn denied.

    Precondition: the images' row locks are held (new ones: the caller writes them in this transaction)."""
    if not images:
        return
    row = selectors.policy_active()
    rules = PolicyRules.from_json(row.rules) if row is not None else PolicyRules()
    fingerprints = selectors.site_key_fingerprints()
    claims: dict[str, list[tuple[int, str]]] = {}
    for sha256, pk, identifier in (
        Image.objects.filter(sha256__in={image.sha256 for image in images if image.sha256})
        .exclude(pk__in=[image.pk for image in images if image.pk is not None])
        .order_by("pk")
        .values_list("sha256", "pk", "identifier")
    ):
        claims.setdefault(sha256, []).append((pk, identifier))
    for image in images:  # the others' claims, in id order (new ones last, in the order given)
        if image.sha256:
            claims.setdefault(image.sha256, []).append((image.pk or 2**63, image.identifier))
    for claimants in claims.values():
        claimants.sort(key=lambda claim: claim[0])
    for image in images:
        first = claims[image.sha256][0] if image.sha256 else None
        image.sha256_first_claim = (  # type: ignore[attr-defined]
            first[1] if first is not None and first[1] != image.identifier else None
        )
        decision = evaluate(image, rules=rules, now=now, site_fingerprints=fingerprints)
        _announce_if_lost(image, before=image.verdict, decision=decision, cause=causes[image.identifier])
        image.verdict = verdict_of(decision)
        image.verdict_policy = row.pk if row is not None else 0
        image.verdict_until = _clock_runs_out(image, now=now)


def image_verdicts_write(*, image_ids: Iterable[int], cause: str, now: dt.datetime | None = None) -> int:
    """Rewrite these images' verdicts under the active policy (``cause``: why, for those that turn denied). Takes
    their row locks in primary-key order (callers holding one of them already, as ``entry_upload`` does, keep it)."""
    ids = sorted(set(image_ids))
    if not ids:
        return 0
    now = now or timezone.now()
    with transaction.atomic():
        images = selectors.images_for_evaluation().select_for_update(of=("self",)).filter(pk__in=ids).order_by("pk")
        return _write(images, rules=active_rules(), policy_id=active_policy_id(), now=now, cause=cause)


def verdicts_refresh(*, now: dt.datetime | None = None, limit: int | None = None) -> int:
    """Rewrite every stale verdict (policy changed, clock ran out, never evaluated), in chunks of ``CHUNK``
    images, each chunk locked and written in its own short transaction. Returns how many were written."""
    now = now or timezone.now()
    written = after = 0
    while limit is None or written < limit:
        with transaction.atomic():
            policy_id = active_policy_id()
            chunk = list(
                Image.objects.filter(stale_q(policy_id=policy_id, now=now), pk__gt=after)
                .order_by("pk")
                .values_list("pk", flat=True)[:CHUNK]
            )
            if not chunk:
                break
            after = chunk[-1]  # onwards by primary key: what turns stale behind us is the next run's
            images = selectors.images_for_evaluation().select_for_update(of=("self",)).filter(pk__in=chunk)
            written += _write(images.order_by("pk"), rules=active_rules(), policy_id=policy_id, now=now)
    if written > ANALYZE_AFTER and connection.vendor == "postgresql":
        # The console's long lists show the planner's estimate of their length: tell it what changed now rather
        # than when autovacuum gets to it.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE marketplace_image")
    return written


# The stale verdicts a filter works out itself, at most (a quarter of a millisecond each): after a policy change on a
# large Marketplace every verdict is stale at once, and the refresh task rewrites them in the background instead.
STALE_INLINE_UP_TO = 2_000


@dataclass(frozen=True)
class VerdictFilter:
    """The images whose verdict is the one asked for (``q``), and how many images it had to leave out because their
    verdict under the active policy is not known yet (``pending``; ``pending_is_estimate`` for a long list)."""

    q: Q
    pending: int = 0
    pending_is_estimate: bool = False


def verdict_filter(verdict: str, *, now: dt.datetime | None = None) -> VerdictFilter:
    """The images whose verdict under the active policy is ``verdict`` now: the kept verdicts through their index,
    and the stale ones evaluated here when there are few (``STALE_INLINE_UP_TO``). More are left to the refresh
    task, which the policy change queued; the filter then holds only verdicts known now, never a stale one, and
    says how many it is waiting for."""
    now = now or timezone.now()
    row = selectors.policy_active()
    policy_id = row.pk if row is not None else 0
    kept = fresh_q(policy_id=policy_id, now=now) & Q(verdict=verdict)
    stale_images = Image.objects.filter(stale_q(policy_id=policy_id, now=now)).order_by()
    stale = list(stale_images.values_list("pk", flat=True)[: STALE_INLINE_UP_TO + 1])
    if not stale:
        return VerdictFilter(kept)
    if len(stale) > STALE_INLINE_UP_TO:
        pending = selectors.rows_count(stale_images)
        return VerdictFilter(kept, pending.value, pending.is_estimate)
    rules = PolicyRules.from_json(row.rules) if row is not None else PolicyRules()
    fingerprints = selectors.site_key_fingerprints()
    matching = []
    for start in range(0, len(stale), CHUNK):
        for image in selectors.images_for_evaluation().filter(pk__in=stale[start : start + CHUNK]):
            if verdict_of(evaluate(image, rules=rules, now=now, site_fingerprints=fingerprints)) == verdict:
                matching.append(image.pk)
    return VerdictFilter(kept | Q(pk__in=matching))
