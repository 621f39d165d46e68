"""Site policy changes: a new active version of the rules (the old ones kept), and rules read from a StratusLab
``policy.cfg``."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from core import audit
from core.errors import Conflict
from marketplace.models import SitePolicy
from marketplace.policy.evaluation import active_rules
from marketplace.policy.rules import PolicyRules, rules_from_policy_cfg


def policy_change(
    *, actor: Any, rules: PolicyRules, note: str = "", based_on: int | None = None, source: str = "api"
) -> tuple[SitePolicy, bool]:
    """Make ``rules`` the active policy: a new version, the old one kept in the history.

    ``based_on``: the active policy's id the caller's dry run was made against (0: there was none); when the
    active policy has changed since, the change is refused (409) so that no one confirms a stale dry run.
    Rules equal to the active ones change nothing. Returns the active policy and whether it changed.
    Audit: ``marketplace.policy.changed`` with the old and new rules."""
    try:
        with transaction.atomic():
            current = SitePolicy.objects.select_for_update().filter(is_active=True).first()
            if based_on is not None and (current.pk if current else 0) != based_on:
                raise Conflict(
                    "The policy was changed by someone else since this dry run; look at the dry run again.",
                    code="policy-changed",
                )
            old = PolicyRules.from_json(current.rules) if current else PolicyRules()
            if current is not None and old == rules:
                return current, False
            if current is not None:
                SitePolicy.objects.filter(pk=current.pk).update(is_active=False)
            policy = SitePolicy.objects.create(
                rules=rules.to_json(),
                created_by=actor if getattr(actor, "is_authenticated", False) else None,
                note=note.strip(),
                is_active=True,
            )
            audit.record(
                actor,
                "marketplace.policy.changed",
                policy,
                old=old.to_json(),
                new=rules.to_json(),
                previous=current.pk if current else None,
                note=policy.note,
                source=source,
            )
            # Every kept verdict is stale from now (another policy id): readers evaluate until the task rewrites.
            transaction.on_commit(_verdicts_refresh_later)
    except IntegrityError:  # two first policies at once: the other one won
        raise Conflict("The policy was changed at the same moment; try again.", code="policy-changed") from None
    return policy, True


def _verdicts_refresh_later() -> None:
    from marketplace.tasks import verdicts_refresh

    verdicts_refresh.delay()


def policy_rules_from_cfg(*, text: str) -> PolicyRules:
    """The active rules with the endorser, image and checksum lists of a StratusLab ``policy.cfg``."""
    return rules_from_policy_cfg(text, base=active_rules())
