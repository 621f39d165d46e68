"""The one declaration of the policy's rule fields (DESIGN §2.4): name, kind, label and help text.

:class:`~marketplace.policy.rules.PolicyRules` holds the values; the API serializer
(:mod:`marketplace.policy.serializers`) and the console form (:mod:`marketplace.policy.forms`) are built from
this table, so a rule is added in two places only: here and in ``PolicyRules`` (a test holds the two together).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# How a field is read and shown: a mode; lists of endorsers, identifiers or checksums (one per line);
# lists of words (comma-separated); a count; a size in bytes or none; a flag; k of n endorsers.
FieldKind = Literal["mode", "endorsers", "identifiers", "checksums", "words", "count", "bytes", "flag", "required"]
LIST_KINDS: frozenset[str] = frozenset({"endorsers", "identifiers", "checksums", "words"})

MODE_LABELS = {"enforce": "enforce: deny", "warn": "warn: allow, tell the user", "audit": "audit: allow, log"}


@dataclass(frozen=True)
class RuleField:
    name: str  # the JSON name of DESIGN §2.4, and the PolicyRules attribute
    kind: FieldKind
    label: str
    help: str


RULE_FIELDS: tuple[RuleField, ...] = (
    RuleField(
        "mode",
        "mode",
        "Mode",
        "What happens when a rule fails: enforce denies, warn allows and tells the user, audit allows and logs.",
    ),
    RuleField(
        "endorsers_allow",
        "endorsers",
        "Endorsers allowed",
        "Key fingerprints, e-mails or the word site; empty = any endorser.",
    ),
    RuleField(
        "endorsers_deny",
        "endorsers",
        "Endorsers denied",
        "Key fingerprints, e-mails or the word site: their endorsements are ignored.",
    ),
    RuleField("images_allow", "identifiers", "Images allowed", "Image identifiers; empty = any image."),
    RuleField("images_deny", "identifiers", "Images denied", "Image identifiers."),
    RuleField("checksums_allow", "checksums", "Checksums allowed", "SHA-1 or SHA-256 hex digests; empty = any."),
    RuleField("checksums_deny", "checksums", "Checksums denied", "SHA-1 or SHA-256 hex digests."),
    RuleField(
        "min_endorsements",
        "count",
        "Minimum current endorsements",
        "Expired, deprecated and revoked endorsements never count.",
    ),
    RuleField(
        "required_endorsers",
        "required",
        "Required endorsers",
        "k of these must endorse it: key fingerprints, e-mails or the word site. Empty: no such rule.",
    ),
    RuleField("kinds", "words", "Kinds", "machine, disk; empty = any."),
    RuleField("os", "words", "Operating systems", "Comma-separated; empty = any."),
    RuleField("arch", "words", "Architectures", "Comma-separated; empty = any."),
    RuleField("formats", "words", "Formats", "raw, qcow2; empty = any."),
    RuleField("max_bytes", "bytes", "Largest image (bytes)", "Empty (null) = any size."),
    RuleField(
        "require_location",
        "flag",
        "Require a download location",
        "Only images an endorsement says where to download from.",
    ),
)
