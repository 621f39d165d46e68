"""Site policy rules and their engine: which images may run here, decided rule by rule with reasons (DESIGN §2.4).

The rules are a plain value (:class:`PolicyRules`, JSON names of DESIGN §2.4) evaluated against plain
facts about one image (:class:`ImageFacts`) by :func:`evaluate_rules`, a pure function. Endorser and
checksum lists work as StratusLab's policy filters did: they decide which of the image's current
endorsements the site trusts, and an image none of whose endorsements survive is refused.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

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


def evaluate_rules(rules: PolicyRules, facts: ImageFacts) -> Decision:
    """Every rule, in the order of DESIGN §2.4, with why it passed, failed or did not apply."""
    results: list[RuleResult] = []
    current = [e for e in facts.endorsements if e.is_current]
    not_counted = [e for e in facts.endorsements if not e.is_current]

    # Endorser lists filter which current endorsements the site trusts.
    trusted = list(current)
    if rules.endorsers_allow:
        kept = [e for e in trusted if any(e.matches(a) for a in rules.endorsers_allow)]
        if kept:
            results.append(
                RuleResult("endorsers_allow", "passed", f"endorsed by allowed {_listing(e.label for e in kept)}")
            )
        else:
            results.append(
                RuleResult("endorsers_allow", "failed", "no current endorsement is from an allowed endorser")
            )
        trusted = kept
    else:
        results.append(_na("endorsers_allow", "any endorser is allowed"))
    if rules.endorsers_deny:
        denied = [e for e in trusted if any(e.matches(d) for d in rules.endorsers_deny)]
        trusted = [e for e in trusted if e not in denied]
        if denied and not trusted:
            results.append(
                RuleResult(
                    "endorsers_deny", "failed", f"only denied endorsers endorse it: {_listing(e.label for e in denied)}"
                )
            )
        elif denied:
            results.append(
                RuleResult("endorsers_deny", "passed", f"ignored denied endorsers: {_listing(e.label for e in denied)}")
            )
        else:
            results.append(RuleResult("endorsers_deny", "passed", "no denied endorser endorses it"))
    else:
        results.append(_na("endorsers_deny", "no endorser is denied"))

    if rules.images_allow:
        ok = facts.identifier in rules.images_allow
        results.append(
            RuleResult(
                "images_allow",
                "passed" if ok else "failed",
                "the image is on the allow list" if ok else f"{facts.identifier} is not on the allow list",
            )
        )
    else:
        results.append(_na("images_allow", "any image is allowed"))
    if rules.images_deny:
        bad = facts.identifier in rules.images_deny
        results.append(
            RuleResult(
                "images_deny",
                "failed" if bad else "passed",
                f"{facts.identifier} is on the deny list" if bad else "the image is not on the deny list",
            )
        )
    else:
        results.append(_na("images_deny", "no image is denied"))

    # The image's fixed checksums, never what its newest entry says. The SHA-1 is the identifier's own; a SHA-256
    # vouches for the image only if no other image claimed it first (a latecomer cannot borrow a trusted one),
    # while a denied checksum denies whoever claims it.
    sha256 = (facts.sha256 or "").lower()
    digests = {d for d in (facts.sha1.lower(), sha256) if d}
    if rules.checksums_allow:
        vouching = digests - ({sha256} if facts.sha256_claimed_first_by else set())
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
        results.append(RuleResult("checksums_allow", "passed" if ok else "failed", reason))
    else:
        results.append(_na("checksums_allow", "any checksum is allowed"))
    if rules.checksums_deny:
        hit = sorted(digests & set(rules.checksums_deny))
        results.append(
            RuleResult(
                "checksums_deny",
                "failed" if hit else "passed",
                f"checksum {hit[0]} is on the deny list" if hit else "its checksums are not on the deny list",
            )
        )
    else:
        results.append(_na("checksums_deny", "no checksum is denied"))

    # Kind, OS, arch and format are each endorsement's own claims: an endorsement whose claims a rule refuses
    # does not count (like the endorser lists, before the counting rules); a rule fails when no trusted
    # endorsement satisfies it. The lines are kept for their place in the order of DESIGN §2.4.
    claim_results: list[RuleResult] = []
    claims_failed: list[EndorsementFact] = []
    for rule, allowed_values, claim, what in (
        ("kinds", rules.kinds, "kind", "kind"),
        ("os", rules.os, "os", "OS"),
        ("arch", rules.arch, "arch", "architecture"),
        ("formats", rules.formats, "format", "format"),
    ):
        if not allowed_values:
            claim_results.append(_na(rule, f"any {what} is allowed"))
            continue
        good = [e for e in trusted if getattr(e, claim) and getattr(e, claim).lower() in allowed_values]
        refused_by = [e for e in trusted if e not in good]
        claims_failed.extend(e for e in refused_by if e not in claims_failed)
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
            claim_results.append(RuleResult(rule, "passed", reason))
        elif refused_by:
            reason = "; ".join(
                f"{what} {getattr(e, claim)} is not one of {_listing(allowed_values)} (claimed by {e.label})"
                if getattr(e, claim)
                else f"{e.label} declares no {what}; allowed: {_listing(allowed_values)}"
                for e in refused_by
            )
            claim_results.append(RuleResult(rule, "failed", reason))
        else:
            claim_results.append(
                RuleResult(
                    rule,
                    "failed",
                    f"no trusted current endorsement claims a {what}; allowed: {_listing(allowed_values)}",
                )
            )
    trusted = [e for e in trusted if e not in claims_failed]

    count = len(trusted)
    ignored = f" ({len(not_counted)} expired, deprecated or revoked not counted)" if not_counted else ""
    if claims_failed:
        ignored += f" ({len(claims_failed)} not counted: claims outside the kind, OS, arch or format rules)"
    if rules.min_endorsements:
        ok = count >= rules.min_endorsements
        results.append(
            RuleResult(
                "min_endorsements",
                "passed" if ok else "failed",
                f"{count} current endorsement{'s' if count != 1 else ''}, {rules.min_endorsements} required{ignored}",
            )
        )
    else:
        results.append(_na("min_endorsements", "no minimum"))

    if rules.required_endorsers:
        req = rules.required_endorsers
        present = [name for name in req.of if any(e.matches(name) for e in trusted)]
        missing = [name for name in req.of if name not in present]
        ok = len(present) >= req.k
        reason = f"{len(present)} of the {req.k} required from [{_listing(req.of)}] endorse it"
        if not ok:
            reason += f"; missing: {_listing(missing)}"
        results.append(RuleResult("required_endorsers", "passed" if ok else "failed", reason))
    else:
        results.append(_na("required_endorsers", "no endorsers are required"))

    results.extend(claim_results)

    if rules.max_bytes is not None:
        if facts.bytes is None:
            results.append(RuleResult("max_bytes", "failed", "the image declares no size"))
        else:
            ok = facts.bytes <= rules.max_bytes
            results.append(
                RuleResult(
                    "max_bytes", "passed" if ok else "failed", f"{facts.bytes} bytes, at most {rules.max_bytes} allowed"
                )
            )
    else:
        results.append(_na("max_bytes", "any size is allowed"))

    if rules.require_location:
        locations = [url for e in trusted for url in e.locations]
        ok = bool(locations)
        results.append(
            RuleResult(
                "require_location",
                "passed" if ok else "failed",
                f"downloadable from {locations[0]}"
                if ok
                else "no trusted current endorsement gives a location to download it from",
            )
        )
    else:
        results.append(_na("require_location", "a location is not required"))

    failed = any(r.outcome == "failed" for r in results)
    return Decision(
        mode=rules.mode,
        allowed=not failed or rules.mode != "enforce",
        results=tuple(results),
        trusted_endorsers=tuple(e.label for e in trusted),
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
