"""Site policy rules and their engine: which images may run here, decided rule by rule with reasons (DESIGN §2.4).

The rules are a plain value (:class:`PolicyRules`, JSON names of DESIGN §2.4) evaluated against plain
facts about one image (:class:`ImageFacts`) by :func:`evaluate_rules`, a pure function. Endorser and
checksum lists work as StratusLab's policy filters did: they decide which of the image's current
endorsements the site trusts, and an image none of whose endorsements survive is refused.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NamedTuple

from core.errors import ApplicationError

Mode = Literal["enforce", "warn", "audit"]
Outcome = Literal["passed", "failed", "not_applicable"]
MODES: tuple[Mode, ...] = ("enforce", "warn", "audit")
SITE = "site"  # in endorser lists, the word that stands for the site's own key

_FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")
_HEX_DIGEST = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")


class PolicyInvalid(ApplicationError):
    default_code = "policy-invalid"


@dataclass(frozen=True)
class RequiredEndorsers:
    """``k`` of the endorsers in ``of`` (fingerprints, e-mails or ``site``) must endorse the image."""

    k: int
    of: tuple[str, ...]


@dataclass(frozen=True)
class PolicyRules:
    mode: Mode = "enforce"
    endorsers_allow: tuple[str, ...] = ()
    endorsers_deny: tuple[str, ...] = ()
    images_allow: tuple[str, ...] = ()
    images_deny: tuple[str, ...] = ()
    checksums_allow: tuple[str, ...] = ()
    checksums_deny: tuple[str, ...] = ()
    min_endorsements: int = 1
    required_endorsers: RequiredEndorsers | None = None
    kinds: tuple[str, ...] = ()
    os: tuple[str, ...] = ()
    arch: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()
    max_bytes: int | None = None
    require_location: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        if self.required_endorsers is not None:
            data["required_endorsers"] = {"k": self.required_endorsers.k, "of": list(self.required_endorsers.of)}
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PolicyRules:
        """Read the JSON form; every problem is reported at once, each naming its field."""
        if not isinstance(data, Mapping):
            raise PolicyInvalid("a policy is a JSON object")
        problems: dict[str, str] = {}
        known = {f for f in cls.__dataclass_fields__}
        for name in sorted(set(data) - known):
            problems[name] = f"unknown policy field {name!r}"
        values: dict[str, Any] = {}

        mode = data.get("mode", "enforce")
        if mode not in MODES:
            problems["mode"] = f"mode must be one of {', '.join(MODES)}, got {mode!r}"
        values["mode"] = mode

        for name in ("endorsers_allow", "endorsers_deny"):
            values[name] = _read_list(data, name, problems, _normalise_endorser)
        for name in ("images_allow", "images_deny"):
            values[name] = _read_list(data, name, problems, str.strip)
        for name in ("checksums_allow", "checksums_deny"):
            values[name] = _read_list(data, name, problems, _normalise_checksum)
        for name in ("kinds", "os", "arch", "formats"):
            values[name] = _read_list(data, name, problems, lambda v: v.strip().lower())

        min_endorsements = data.get("min_endorsements", 1)
        if isinstance(min_endorsements, bool) or not isinstance(min_endorsements, int) or min_endorsements < 0:
            problems["min_endorsements"] = f"min_endorsements must be a whole number ≥ 0, got {min_endorsements!r}"
        values["min_endorsements"] = min_endorsements

        max_bytes = data.get("max_bytes")
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
            problems["max_bytes"] = f"max_bytes must be null or a whole number ≥ 1, got {max_bytes!r}"
        values["max_bytes"] = max_bytes

        require_location = data.get("require_location", False)
        if not isinstance(require_location, bool):
            problems["require_location"] = f"require_location must be true or false, got {require_location!r}"
        values["require_location"] = require_location

        values["required_endorsers"] = _read_required(data.get("required_endorsers"), problems)

        if problems:
            first = next(iter(problems.values()))
            raise PolicyInvalid(first, extra={"errors": problems})
        return cls(**values)


def _normalise_endorser(value: str) -> str:
    """Fingerprints upper-case without spaces, e-mails lower-case, ``site`` as is."""
    value = value.strip()
    compact = value.replace(" ", "").upper()
    if compact.startswith("OPENPGP:"):
        compact = compact.removeprefix("OPENPGP:")
    if _FINGERPRINT.match(compact):
        return compact
    if value.lower() == SITE:
        return SITE
    if "@" in value:
        return value.lower()
    raise ValueError(f"{value!r} is neither a 40-hex key fingerprint, an e-mail address nor 'site'")


def _normalise_checksum(value: str) -> str:
    value = value.strip().lower()
    if not _HEX_DIGEST.match(value):
        raise ValueError(f"{value!r} is not a SHA-1 (40 hex) or SHA-256 (64 hex) checksum")
    return value


def _read_list(data: Mapping[str, Any], name: str, problems: dict[str, str], normalise: Any) -> tuple[str, ...]:
    raw = data.get(name, [])
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        problems[name] = f"{name} must be a list of strings"
        return ()
    out: list[str] = []
    for item in raw:
        if not item.strip():
            continue
        try:
            value = normalise(item)
        except ValueError as exc:
            problems[name] = f"{name}: {exc}"
            return ()
        if value not in out:
            out.append(value)
    return tuple(out)


def _read_required(raw: Any, problems: dict[str, str]) -> RequiredEndorsers | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) != {"k", "of"}:
        problems["required_endorsers"] = 'required_endorsers must be null or {"k": <number>, "of": [<endorser>, …]}'
        return None
    of = _read_list(raw, "of", problems, _normalise_endorser)
    if "of" in problems:
        problems["required_endorsers"] = problems.pop("of").replace("of:", "required_endorsers.of:", 1)
        return None
    k = raw["k"]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(of):
        problems["required_endorsers"] = f"required_endorsers.k must be between 1 and {len(of)} (the size of 'of')"
        return None
    return RequiredEndorsers(k=k, of=of)


# Keys of the API's GET answer that a PUT may send back unchanged: a client can edit what it read.
_READ_ONLY = ("id", "created", "created_by")


def read_rules(data: Any) -> tuple[PolicyRules, str]:
    """The rules and note of a request body (the API's, the console's confirmation); every bad field named at
    once (``policy-invalid``)."""
    if not isinstance(data, dict):
        raise PolicyInvalid("The body must be a JSON object of policy rules.")
    body = {k: v for k, v in data.items() if k not in _READ_ONLY}
    note = body.pop("note", "")
    if not isinstance(note, str):
        raise PolicyInvalid("note must be a string", extra={"errors": {"note": "note must be a string"}})
    return PolicyRules.from_json(body), note


# --- facts and decisions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndorsementFact:
    """One endorser's latest entry for the image, as the Marketplace sees it now, with what it claims about the
    image's description (each endorsement speaks for itself: the kind, OS, arch and format rules judge its claims)."""

    email: str
    fingerprint: str
    status: str  # valid | expired | deprecated
    revoked: bool = False  # the signing key is revoked (now)
    is_site: bool = False  # signed with the site key
    kind: str = ""
    os: str = ""
    arch: str = ""
    format: str = ""
    locations: tuple[str, ...] = ()
    created: str = ""  # the entry's dcterms:created (ISO 8601): with the e-mail, which entry this is

    @property
    def is_current(self) -> bool:
        return self.status == "valid" and not self.revoked

    @property
    def label(self) -> str:
        return f"{self.email} ({self.fingerprint[-16:]})" if self.fingerprint else self.email

    def matches(self, endorser: str) -> bool:
        if endorser == SITE:
            return self.is_site
        return endorser in (self.email.lower(), self.fingerprint.upper())


@dataclass(frozen=True)
class ImageFacts:
    """What is fixed about the image whoever endorses it (identifier, checksums and size: the first accepted
    entry fixed them), and every endorser's latest entry with its own claims."""

    identifier: str
    sha1: str
    sha256: str | None = None
    # Another image that claimed the same SHA-256 before this one did: the claim counts for that one only.
    sha256_claimed_first_by: str | None = None
    bytes: int | None = None
    endorsements: tuple[EndorsementFact, ...] = ()


@dataclass(frozen=True)
class RuleResult:
    rule: str
    outcome: Outcome
    reason: str


@dataclass(frozen=True)
class Decision:
    mode: Mode
    allowed: bool
    results: tuple[RuleResult, ...]
    trusted_endorsers: tuple[str, ...] = field(default=())
    # The entries whose endorsements count after every rule: {"endorser": e-mail, "created": ISO 8601}. Compute
    # and storage record them with what runs from the image (which entries allowed it at the moment of use).
    allowed_by: tuple[dict[str, str], ...] = field(default=())

    @property
    def failures(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if r.outcome == "failed")

    @property
    def verdict(self) -> str:
        """``allowed``, ``denied``, or ``allowed-with-warnings`` (warn mode with failures); audit mode's
        failures are logged, not shown, so it reads ``allowed``."""
        if not self.allowed:
            return "denied"
        if self.failures and self.mode == "warn":
            return "allowed-with-warnings"
        return "allowed"

    @property
    def summary(self) -> str:
        failures = self.failures
        if not failures:
            return "allowed: every rule passed"
        reasons = "; ".join(f"{r.rule}: {r.reason}" for r in failures)
        return f"{self.verdict} ({self.mode} mode): {reasons}"

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "allowed": self.allowed,
            "verdict": self.verdict,
            "summary": self.summary,
            "trusted_endorsers": list(self.trusted_endorsers),
            "rules": [asdict(r) for r in self.results],
        }


def _na(rule: str, why: str = "no such rule is set") -> RuleResult:
    return RuleResult(rule, "not_applicable", why)


def _listing(items: Iterable[str]) -> str:
    return ", ".join(items)


# --- the engine: one function per rule (the claim rules as one family), run in the order of DESIGN §2.4 -------

Trusted = tuple[EndorsementFact, ...]


class Step(NamedTuple):
    """The lines one rule wrote, and the current endorsements the site still trusts after it."""

    results: tuple[RuleResult, ...]
    trusted: Trusted


RuleCheck = Callable[[PolicyRules, ImageFacts, Trusted], Step]


# Endorser lists filter which current endorsements the site trusts.
def _endorsers_allow(rules: PolicyRules, facts: ImageFacts, trusted: Trusted) -> Step:
    if not rules.endorsers_allow:
        return Step((_na("endorsers_allow", "any endorser is allowed"),), trusted)
    kept = tuple(e for e in trusted if any(e.matches(a) for a in rules.endorsers_allow))
    if kept:
        result = RuleResult("endorsers_allow", "passed", f"endorsed by allowed {_listing(e.label for e in kept)}")
    else:
        result = RuleResult("endorsers_allow", "failed", "no current endorsement is from an allowed endorser")
    return Step((result,), kept)


def _endorsers_deny(rules: PolicyRules, facts: ImageFacts, trusted: Trusted) -> Step:
    if not rules.endorsers_deny:
        return Step((_na("endorsers_deny", "no endorser is denied"),), trusted)
    denied = [e for e in trusted if any(e.matches(d) for d in rules.endorsers_deny)]
    kept = tuple(e for e in trusted if e not in denied)
    if denied and not kept:
        reason = f"only denied endorsers endorse it: {_listing(e.label for e in denied)}"
        result = RuleResult("endorsers_deny", "failed", reason)
    elif denied:
        result = RuleResult(
            "endorsers_deny", "passed", f"ignored denied endorsers: {_listing(e.label for e in denied)}"
        )
    else:
        result = RuleResult("endorsers_deny", "passed", "no denied endorser endorses it")
    return Step((result,), kept)


def _images_allow(rules: PolicyRules, facts: ImageFacts, trusted: Trusted) -> Step:
    if not rules.images_allow:
        return Step((_na("images_allow", "any image is allowed"),), trusted)
    ok = facts.identifier in rules.images_allow
    reason = "the image is on the allow list" if ok else f"{facts.identifier} is not on the allow list"
    return Step((RuleResult("images_allow", "passed" if ok else "failed", reason),), trusted)


def _images_deny(rules: PolicyRules, facts: ImageFacts, trusted: Trusted) -> Step:
    if not rules.images_deny:
        return Step((_na("images_deny", "no image is denied"),), trusted)
    bad = facts.identifier in rules.images_deny
    reason = f"{facts.identifier} is on the deny list" if bad else "the image is not on the deny list"
    return Step((RuleResult("images_deny", "failed" if bad else "passed", reason),), trusted)


# The image's fixed checksums, never what its newest entry says. The SHA-1 is the identifier's own; a SHA-256
# vouches for the image only if no other image claimed it first (a latecomer cannot borrow a trusted one),
# while a denied checksum denies whoever claims it.
def _sha256(facts: ImageFacts) -> str:
    return (facts.sha256 or "").lower()


def _digests(facts: ImageFacts) -> set[str]:
    return {d for d in (facts.sha1.lower(), _sha256(facts)) if d}


def _checksums_allow(rules: PolicyRules, facts: ImageFacts, trusted: Trusted) -> Step:
    if not rules.checksums_allow:
        return Step((_na("checksums_allow", "any checksum is allowed"),), trusted)
    sha256 = _sha256(facts)
    vouching = _digests(facts) - ({sha256} if facts.sha256_claimed_first_by else set())
    ok = bool(vouching & set(rules.checksums_allow))
    if ok:
        reason = "its checksum is on the allow list"
    elif sha256 in rules.checksums_allow:
        reason = (
            f"its SHA-256 is on the allow list, but the image {facts.sha256_claimed_first_by} claimed that "
            "SHA-256 first: it cannot vouch for this image"
        )
    else:
        reason = "neither its SHA-1 nor its SHA-256 is on the allow list"
    return Step((RuleResult("checksums_allow", "passed" if ok else "failed", reason),), trusted)


def _checksums_deny(rules: PolicyRules, facts: ImageFacts, trusted: Trusted) -> Step:
    if not rules.checksums_deny:
        return Step((_na("checksums_deny", "no checksum is denied"),), trusted)
    hit = sorted(_digests(facts) & set(rules.checksums_deny))
    reason = f"checksum {hit[0]} is on the deny list" if hit else "its checksums are not on the deny list"
    return Step((RuleResult("checksums_deny", "failed" if hit else "passed", reason),), trusted)


# Kind, OS, arch and format are each endorsement's own claims: an endorsement whose claims a rule refuses does
# not count (like the endorser lists), and a rule fails when no trusted endorsement satisfies it. The counting
# rules come first in DESIGN §2.4 but count only what these rules accept (``_counted``); these rules narrow the
# trusted endorsements for the rules after them.
_CLAIM_RULES: tuple[tuple[str, str, str], ...] = (
    # (rule, the endorsement's attribute, how a reason names it)
    ("kinds", "kind", "kind"),
    ("os", "os", "OS"),
    ("arch", "arch", "architecture"),
    ("formats", "format", "format"),
)


def _claim_accepted(endorsement: EndorsementFact, claim: str, allowed_values: tuple[str, ...]) -> bool:
    value = getattr(endorsement, claim)
    return bool(value) and value.lower() in allowed_values


def _refused_for_claims(rules: PolicyRules, trusted: Trusted) -> list[EndorsementFact]:
    """The trusted endorsements whose claims one of the kind, OS, arch or format rules refuses."""
    refused: list[EndorsementFact] = []
    for rule, claim, _what in _CLAIM_RULES:
        allowed_values = getattr(rules, rule)
        if allowed_values:
            refused.extend(e for e in trusted if not _claim_accepted(e, claim, allowed_values) and e not in refused)
    return refused


def _claim_result(rule: str, claim: str, what: str, allowed_values: tuple[str, ...], trusted: Trusted) -> RuleResult:
    if not allowed_values:
        return _na(rule, f"any {what} is allowed")
    good = [e for e in trusted if _claim_accepted(e, claim, allowed_values)]
    refused_by = [e for e in trusted if e not in good]
    if good:
        by_value: dict[str, list[str]] = {}
        for e in good:
            by_value.setdefault(getattr(e, claim), []).append(e.label)
        reason = "; ".join(f"{what} {value} is allowed ({_listing(who)})" for value, who in by_value.items())
        if refused_by:
            reason += "; not counted: " + _listing(
                f"{e.label} claims {getattr(e, claim)}" if getattr(e, claim) else f"{e.label} declares no {what}"
                for e in refused_by
            )
        return RuleResult(rule, "passed", reason)
    if refused_by:
        reason = "; ".join(
            f"{what} {getattr(e, claim)} is not one of {_listing(allowed_values)} (claimed by {e.label})"
            if getattr(e, claim)
            else f"{e.label} declares no {what}; allowed: {_listing(allowed_values)}"
            for e in refused_by
        )
        return RuleResult(rule, "failed", reason)
    reason = f"no trusted current endorsement claims a {what}; allowed: {_listing(allowed_values)}"
    return RuleResult(rule, "failed", reason)


def _claims(rules: PolicyRules, facts: ImageFacts, trusted: Trusted) -> Step:
    """``kinds``, ``os``, ``arch`` and ``formats``, each judging the same trusted endorsements."""
    results = tuple(
        _claim_result(rule, claim, what, getattr(rules, rule), trusted) for rule, claim, what in _CLAIM_RULES
    )
    refused = _refused_for_claims(rules, trusted)
    return Step(results, tuple(e for e in trusted if e not in refused))


def _counted(rules: PolicyRules, trusted: Trusted) -> Trusted:
    """What the counting rules count: the trusted endorsements whose claims the claim rules accept."""
    refused = _refused_for_claims(rules, trusted)
    return tuple(e for e in trusted if e not in refused)


def _min_endorsements(rules: PolicyRules, facts: ImageFacts, trusted: Trusted) -> Step:
    if not rules.min_endorsements:
        return Step((_na("min_endorsements", "no minimum"),), trusted)
    refused = _refused_for_claims(rules, trusted)
    count = sum(e not in refused for e in trusted)
    not_current = sum(not e.is_current for e in facts.endorsements)
    ignored = f" ({not_current} expired, deprecated or revoked not counted)" if not_current else ""
    if refused:
        ignored += f" ({len(refused)} not counted: claims outside the kind, OS, arch or format rules)"
    ok = count >= rules.min_endorsements
    reason = f"{count} current endorsement{'s' if count != 1 else ''}, {rules.min_endorsements} required{ignored}"
    return Step((RuleResult("min_endorsements", "passed" if ok else "failed", reason),), trusted)


def _required_endorsers(rules: PolicyRules, facts: ImageFacts, trusted: Trusted) -> Step:
    if not rules.required_endorsers:
        return Step((_na("required_endorsers", "no endorsers are required"),), trusted)
    req = rules.required_endorsers
    counted = _counted(rules, trusted)
    present = [name for name in req.of if any(e.matches(name) for e in counted)]
    missing = [name for name in req.of if name not in present]
    ok = len(present) >= req.k
    reason = f"{len(present)} of the {req.k} required from [{_listing(req.of)}] endorse it"
    if not ok:
        reason += f"; missing: {_listing(missing)}"
    return Step((RuleResult("required_endorsers", "passed" if ok else "failed", reason),), trusted)


def _max_bytes(rules: PolicyRules, facts: ImageFacts, trusted: Trusted) -> Step:
    if rules.max_bytes is None:
        return Step((_na("max_bytes", "any size is allowed"),), trusted)
    if facts.bytes is None:
        return Step((RuleResult("max_bytes", "failed", "the image declares no size"),), trusted)
    ok = facts.bytes <= rules.max_bytes
    reason = f"{facts.bytes} bytes, at most {rules.max_bytes} allowed"
    return Step((RuleResult("max_bytes", "passed" if ok else "failed", reason),), trusted)


def _require_location(rules: PolicyRules, facts: ImageFacts, trusted: Trusted) -> Step:
    if not rules.require_location:
        return Step((_na("require_location", "a location is not required"),), trusted)
    locations = [url for e in trusted for url in e.locations]
    if locations:
        return Step((RuleResult("require_location", "passed", f"downloadable from {locations[0]}"),), trusted)
    reason = "no trusted current endorsement gives a location to download it from"
    return Step((RuleResult("require_location", "failed", reason),), trusted)


# The rules in the order of DESIGN §2.4, which is the order of the decision's lines.
RULE_CHECKS: tuple[RuleCheck, ...] = (
    _endorsers_allow,
    _endorsers_deny,
    _images_allow,
    _images_deny,
    _checksums_allow,
    _checksums_deny,
    _min_endorsements,
    _required_endorsers,
    _claims,
    _max_bytes,
    _require_location,
)


def evaluate_rules(rules: PolicyRules, facts: ImageFacts) -> Decision:
    """Every rule, in the order of DESIGN §2.4, with why it passed, failed or did not apply."""
    results: list[RuleResult] = []
    trusted: Trusted = tuple(e for e in facts.endorsements if e.is_current)
    for check in RULE_CHECKS:
        step = check(rules, facts, trusted)
        results.extend(step.results)
        trusted = step.trusted
    failed = any(r.outcome == "failed" for r in results)
    return Decision(
        mode=rules.mode,
        allowed=not failed or rules.mode != "enforce",
        results=tuple(results),
        trusted_endorsers=tuple(e.label for e in trusted),
        allowed_by=tuple({"endorser": e.email, "created": e.created} for e in trusted),
    )


# --- StratusLab policy.cfg ------------------------------------------------------------------------------

# StratusLab's own key names (stratuslab.marketplace.Policy): section -> (allow key, deny key) and the
# JSON rules they fill. Only these exact names are read; anything that merely starts like them is refused.
_CFG_SECTIONS = {
    "endorsers": (("whitelistendorsers", "endorsers_allow"), ("blacklistendorsers", "endorsers_deny")),
    "images": (("whitelistimages", "images_allow"), ("blacklistimages", "images_deny")),
    "checksums": (("whitelistchecksums", "checksums_allow"), ("blacklistchecksums", "checksums_deny")),
}


def _cfg_invalid(message: str) -> PolicyInvalid:
    return PolicyInvalid(f"policy.cfg {message}", code="policy-cfg-invalid")


def rules_from_policy_cfg(text: str, *, base: PolicyRules | None = None) -> PolicyRules:
    """Read a StratusLab ``policy.cfg``: sections ``[endorsers]``, ``[images]``, ``[checksums]`` with the keys
    ``whitelist<section>`` / ``blacklist<section>`` (any letter case), one value per line (commas also
    separate). A section's lists replace those of ``base``; every other rule of ``base`` is kept. Any other
    section or key (also a ``[DEFAULT]`` one) is refused with ``policy-cfg-invalid``, naming it."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise _cfg_invalid(f"is not a valid INI file: {exc.message}") from None
    unknown = [s for s in parser.sections() if s.lower() not in _CFG_SECTIONS]
    if unknown:
        raise _cfg_invalid(f"has unknown section [{unknown[0]}]; expected [endorsers], [images], [checksums]")
    if parser.defaults():
        # configparser would copy these keys into every section.
        raise _cfg_invalid(
            f"has unknown section [{parser.default_section}]; expected [endorsers], [images], [checksums]"
        )
    data = (base or PolicyRules()).to_json()
    for section in parser.sections():
        keys = dict(_CFG_SECTIONS[section.lower()])
        lists: dict[str, list[str]] = dict.fromkeys(keys.values(), [])
        for key, value in parser.items(section):
            if key not in keys:  # configparser has lower-cased the key
                raise _cfg_invalid(
                    f"[{section}] key {key!r} is neither whitelist… nor blacklist… of this section; "
                    f"StratusLab's keys here are {', '.join(keys)}"
                )
            lists[keys[key]] = [v for v in re.split(r"[\s,]+", value) if v]
        data.update(lists)
    return PolicyRules.from_json(data)
