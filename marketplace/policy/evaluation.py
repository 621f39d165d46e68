"""The site policy against the Marketplace's data: the facts of an image, its decision, and dry runs.

:func:`evaluate` is the one function compute and storage call before an image is used; the console, the
API and the image page call it too, so that everyone sees the same decision with the same reasons.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

from django.utils import timezone

from core import audit
from marketplace import selectors, usage
from marketplace.models import Entry, Image
from marketplace.policy.rules import Decision, EndorsementFact, ImageFacts, PolicyRules, evaluate_rules


def active_rules() -> PolicyRules:
    """The rules in force: the active policy's, or the defaults (enforce, one current endorsement)."""
    row = selectors.policy_active()
    return PolicyRules.from_json(row.rules) if row is not None else PolicyRules()


def _latest_entries(image: Image) -> list[Entry]:
    prefetched = getattr(image, "latest_entries", None)
    if prefetched is not None:
        return list(prefetched)
    return list(
        Entry.objects.filter(image=image, is_latest=True)
        .select_related("endorser", "key")
        .defer("raw", "details", "search_text", "description")
        .order_by("endorser__email")
    )


def endorsement_fact(entry: Entry, *, now: dt.datetime, site_fingerprints: frozenset[str]) -> EndorsementFact:
    """One latest entry as the policy sees it at ``now`` (the selectors' status rules)."""
    return EndorsementFact(
        email=entry.endorser.email,
        fingerprint=entry.fingerprint.upper(),
        status=selectors.entry_document_status(entry, now=now),
        revoked=selectors.key_revoked(entry, now=now),
        is_site=entry.key_id is None and entry.fingerprint.upper() in site_fingerprints,
        kind=entry.kind,
        os=entry.os,
        arch=entry.arch,
        format=entry.format,
        locations=tuple(entry.locations),
        created=entry.created.isoformat() if entry.created else "",
    )


def image_facts(
    image: Image, *, now: dt.datetime | None = None, site_fingerprints: frozenset[str] | None = None
) -> ImageFacts:
    """What the policy judges: what is fixed about the image (identifier, checksums and size, from the
    ``Image`` row that the first accepted entry fixed) and every endorser's latest entry with its own claims
    (kind, OS, arch, format, locations). Nothing comes from whichever entry happens to be the newest."""
    now = now or timezone.now()
    fingerprints = selectors.site_key_fingerprints() if site_fingerprints is None else site_fingerprints
    entries = _latest_entries(image)
    return ImageFacts(
        identifier=image.identifier,
        sha1=image.sha1,
        sha256=image.sha256 or None,
        sha256_claimed_first_by=selectors.image_sha256_claimed_first_by(image),
        bytes=image.bytes,
        endorsements=tuple(endorsement_fact(e, now=now, site_fingerprints=fingerprints) for e in entries),
    )


def evaluate(
    image: Image,
    *,
    rules: PolicyRules | None = None,
    on_use: bool = False,
    actor: Any = None,
    now: dt.datetime | None = None,
    site_fingerprints: frozenset[str] | None = None,
) -> Decision:
    """The site policy's decision on ``image`` now, with one line per rule (DESIGN §2.4).

    THE function every use of an image goes through: compute calls it when a VM is requested and again in
    the worker right before the domain is defined; storage when a static disk is requested and before it is
    attached. Refuse when ``decision.allowed`` is false; show ``decision.summary`` (or the rule lines) to
    the user, in warn mode too.

    ``rules``: the active policy unless given (dry runs pass a proposed one). ``on_use``: set it when the
    image is about to be used (not for pages that only show the decision); then, in ``audit`` mode, failed
    rules are written to the audit log (``marketplace.policy.audited``, ``actor`` = who uses the image),
    since audit mode allows the image and tells no one else. ``site_fingerprints`` saves a query per image
    when many are evaluated. Reads only; opens no transaction; safe to call inside one."""
    now = now or timezone.now()
    rules = rules if rules is not None else active_rules()
    decision = evaluate_rules(rules, image_facts(image, now=now, site_fingerprints=site_fingerprints))
    if on_use and decision.mode == "audit" and decision.failures:
        audit.record(
            actor,
            "marketplace.policy.audited",
            image,
            identifier=image.identifier,
            summary=decision.summary,
            failed=[asdict(r) for r in decision.failures],
        )
    return decision


def evaluate_all(
    *, rules: PolicyRules | None = None, images: Iterable[Image] | None = None, now: dt.datetime | None = None
) -> Iterator[tuple[Image, Decision]]:
    """Every image (or those given, with ``latest_entries`` prefetched) with its decision, one clock for all."""
    now = now or timezone.now()
    rules = rules if rules is not None else active_rules()
    fingerprints = selectors.site_key_fingerprints()
    for image in images if images is not None else selectors.images_for_evaluation().iterator(chunk_size=500):
        yield image, evaluate(image, rules=rules, now=now, site_fingerprints=fingerprints)


@dataclass(frozen=True)
class DryRunChange:
    """An image whose verdict a proposed policy would change, and why; ``running``: how many VMs and static
    volumes run from it now (those a denial would touch)."""

    identifier: str
    title: str
    reason: str
    running: int = 0

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class DryRun:
    """What a proposed policy would change, compared with the active one, for every image now."""

    evaluated: int
    newly_denied: tuple[DryRunChange, ...]
    newly_allowed: tuple[DryRunChange, ...]
    denied_before: int
    denied_after: int

    @property
    def running_touched(self) -> int:
        """The VMs and static volumes running from the images the proposed policy would deny."""
        return sum(change.running for change in self.newly_denied)

    def to_json(self) -> dict[str, Any]:
        return {
            "evaluated": self.evaluated,
            "running_touched": self.running_touched,
            "denied_before": self.denied_before,
            "denied_after": self.denied_after,
            "newly_denied": [c.to_json() for c in self.newly_denied],
            "newly_allowed": [c.to_json() for c in self.newly_allowed],
        }


def _failed_reasons(decision: Decision) -> str:
    return "; ".join(f"{r.rule}: {r.reason}" for r in decision.failures)


def dry_run(proposed: PolicyRules, *, current: PolicyRules | None = None, now: dt.datetime | None = None) -> DryRun:
    """Evaluate every image under the active (or ``current``) policy and under ``proposed``, at one moment.

    Newly denied images carry the proposed policy's failed rules; newly allowed ones what denied them
    before. Reads only."""
    now = now or timezone.now()
    current = current if current is not None else active_rules()
    fingerprints = selectors.site_key_fingerprints()
    denied: list[tuple[int, DryRunChange]] = []
    allowed: list[DryRunChange] = []
    evaluated = denied_before = denied_after = 0
    for image in selectors.images_for_evaluation().iterator(chunk_size=500):
        before = evaluate(image, rules=current, now=now, site_fingerprints=fingerprints)
        after = evaluate(image, rules=proposed, now=now, site_fingerprints=fingerprints)
        evaluated += 1
        denied_before += not before.allowed
        denied_after += not after.allowed
        title = image.title or image.identifier
        if before.allowed and not after.allowed:
            denied.append((image.pk, DryRunChange(image.identifier, title, _failed_reasons(after))))
        elif after.allowed and not before.allowed:
            reason = f"was denied by {_failed_reasons(before)}"
            if after.failures:
                reason += f"; now allowed in {after.mode} mode despite {_failed_reasons(after)}"
            allowed.append(DryRunChange(image.identifier, title, reason))
    running = usage.image_use_counts(pk for pk, _change in denied)
    newly_denied = tuple(replace(change, running=running.get(pk, 0)) for pk, change in denied)
    return DryRun(evaluated, newly_denied, tuple(allowed), denied_before, denied_after)
