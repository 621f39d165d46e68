"""Marketplace REST API (DESIGN §6), one module per resource: ``entries`` (the signed-XML wire formats, upload,
validate, detail), ``images`` (search, detail), ``endorsers``, ``keys`` (the account's OpenPGP keys) and
``policy`` (an image's decision, the site key, the staff-only policy and site endorsements)."""

from __future__ import annotations

from marketplace.api.endorsers import EndorserHistoryApi, EndorserListApi, EndorserSerializer
from marketplace.api.entries import (
    ERROR,
    EntryDetailApi,
    EntryDetailSerializer,
    EntryListUploadApi,
    EntrySummarySerializer,
    EntryValidateApi,
)
from marketplace.api.images import ImageDetailApi, ImageListApi, ImageSerializer
from marketplace.api.keys import PgpKeyListApi, PgpKeyRevokeApi, PgpKeySerializer
from marketplace.api.policy import (
    AdminImageDeprecateApi,
    AdminImageEndorseApi,
    AdminPolicyApi,
    AdminPolicyDryRunApi,
    DecisionSerializer,
    ImagePolicyApi,
    SiteKeyApi,
    decision_json,
)

__all__ = [
    "ERROR",
    "AdminImageDeprecateApi",
    "AdminImageEndorseApi",
    "AdminPolicyApi",
    "AdminPolicyDryRunApi",
    "DecisionSerializer",
    "EndorserHistoryApi",
    "EndorserListApi",
    "EndorserSerializer",
    "EntryDetailApi",
    "EntryDetailSerializer",
    "EntrySummarySerializer",
    "EntryListUploadApi",
    "EntryValidateApi",
    "ImageDetailApi",
    "ImageListApi",
    "ImagePolicyApi",
    "ImageSerializer",
    "PgpKeyListApi",
    "PgpKeyRevokeApi",
    "PgpKeySerializer",
    "SiteKeyApi",
    "decision_json",
]
