"""Site policy: which images may run here, decided rule by rule with reasons (DESIGN §2.4).

``rules``: the rules as a plain value (read from a request body by ``read_rules``) and the pure engine
(``evaluate_rules``), StratusLab ``policy.cfg``.
``evaluation``: the same rules against the Marketplace's data: :func:`evaluate` (the function compute and
storage call before an image is used), :func:`dry_run` (what a proposed policy would change).
"""

from __future__ import annotations

from marketplace.policy.evaluation import (
    DryRun,
    DryRunChange,
    active_rules,
    dry_run,
    endorsement_fact,
    evaluate,
    evaluate_all,
    image_facts,
)
from marketplace.policy.rules import (
    MODES,
    SITE,
    Decision,
    EndorsementFact,
    ImageFacts,
    Mode,
    Outcome,
    PolicyInvalid,
    PolicyRules,
    RequiredEndorsers,
    RuleResult,
    evaluate_rules,
    read_rules,
    rules_from_policy_cfg,
)

__all__ = [
    "MODES",
    "SITE",
    "Decision",
    "DryRun",
    "DryRunChange",
    "EndorsementFact",
    "ImageFacts",
    "Mode",
    "Outcome",
    "PolicyInvalid",
    "PolicyRules",
    "RequiredEndorsers",
    "RuleResult",
    "active_rules",
    "dry_run",
    "endorsement_fact",
    "evaluate",
    "evaluate_all",
    "evaluate_rules",
    "image_facts",
    "read_rules",
    "rules_from_policy_cfg",
]
