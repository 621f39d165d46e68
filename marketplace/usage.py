"""What runs from an image, asked of the apps above the Marketplace, which it never imports (DESIGN §1).

Compute (instances) and storage (static volumes) register a provider in their ``AppConfig.ready``; the image's
console page, the policy dry run and the trust-change notices ask through here."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ImageUse:
    """One thing running from an image: a VM or a static volume, with who owns it."""

    kind: str  # "instance" | "volume"
    id: str
    name: str
    state: str
    owner: str  # username
    project: str
    since: dt.datetime
    allowed_by: tuple[dict[str, str], ...] = ()  # the entries whose endorsements allowed it when it was used


class UsageProvider(Protocol):
    def uses(self, image_id: int) -> list[ImageUse]: ...

    def counts(self, image_ids: Iterable[int]) -> dict[int, int]: ...


_providers: list[UsageProvider] = []


def register(provider: UsageProvider) -> None:
    if provider not in _providers:
        _providers.append(provider)


def image_uses(image_id: int) -> list[ImageUse]:
    """Everything live that runs from the image, oldest first."""
    uses = [use for provider in _providers for use in provider.uses(image_id)]
    return sorted(uses, key=lambda use: (use.since, use.kind, use.id))


def image_use_counts(image_ids: Iterable[int]) -> dict[int, int]:
    ids = list(image_ids)
    total: Counter[int] = Counter()
    for provider in _providers:
        total.update(provider.counts(ids))
    return dict(total)
