"""Policy changes and expiry notices racing, on PostgreSQL: one active policy, one mail per entry."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.core import mail

from core.errors import Conflict
from core.models import AuditEntry
from marketplace import services
from marketplace.models import SitePolicy
from marketplace.policy import PolicyRules
from marketplace.policy.services import policy_change
from tests.marketplace.conftest import IMAGE, OTHER_IMAGE, T0
from tests.race import race

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("existing", [False, True], ids=["first-policy", "replacing"])
def test_concurrent_policy_changes_leave_exactly_one_active_policy_and_a_consistent_history(staff, existing):
    if existing:
        policy_change(actor=staff, rules=PolicyRules.from_json({"min_endorsements": 0}))
    calls = [
        (lambda n=n: policy_change(actor=staff, rules=PolicyRules.from_json({"min_endorsements": n + 1})))
        for n in range(8)
    ]
    outcomes = race(calls)

    assert all(isinstance(o, tuple | Conflict) for o in outcomes), outcomes
    changed = [o for o in outcomes if isinstance(o, tuple)]
    assert changed
    assert SitePolicy.objects.filter(is_active=True).count() == 1
    assert SitePolicy.objects.count() == len(changed) + existing
    # Each change names the one it replaced: the history is a single chain, newest active.
    audits = list(AuditEntry.objects.filter(action="marketplace.policy.changed").order_by("id"))
    previous = [a.details["previous"] for a in audits]
    assert previous == [None] + [int(a.object_id) for a in audits[:-1]]
    assert int(audits[-1].object_id) == SitePolicy.objects.get(is_active=True).pk


def test_two_expiry_runs_at_once_mail_each_endorser_once(owner, staff, registered, entry_for):
    registered(owner, "owner")
    registered(staff, "staff")
    now = T0 + dt.timedelta(days=30)
    for name, user, image in (("owner", owner, IMAGE), ("owner", owner, OTHER_IMAGE), ("staff", staff, IMAGE)):
        services.entry_upload(raw=entry_for(name, image=image, valid=now + dt.timedelta(days=1)), uploader=user)

    with time_machine.travel(now, tick=False):
        outcomes = race([services.endorsement_expiry_notify for _ in range(4)])

    assert all(isinstance(o, int) for o in outcomes), outcomes
    assert sum(outcomes) == 2
    assert sorted(m.to[0] for m in mail.outbox) == ["creator@example.org", "security@example.org"]
