"""Marketplace state changes, by subdomain; every name callers use is re-exported here
(``from marketplace import services; services.entry_upload(...)``).

``keys``: OpenPGP keys of accounts. ``entries``: validating and uploading signed entries, image facts and
display columns. ``site``: the site key and the site's endorsements. ``notices``: expiry notices.
``gpg_errors``: the translation of the gpg adapter's errors. The site policy's changes live in
:mod:`marketplace.policy.services`.

gpg runs before any transaction opens; each transaction then holds the rows it needs for as short a time as it
can.
"""

from __future__ import annotations

from marketplace.services.entries import (
    CLOCK_SKEW,
    SignatureReport,
    Validation,
    VerifiedEntry,
    entry_store,
    entry_upload,
    entry_validate,
    entry_verify,
    image_display_refresh,
)
from marketplace.services.gpg_errors import gpg_errors
from marketplace.services.keys import pgp_key_register, pgp_key_revoke
from marketplace.services.notices import endorsement_expiry_notify
from marketplace.services.site import image_site_deprecate, image_site_endorse, site_key_ensure, site_key_passphrase

__all__ = [
    "CLOCK_SKEW",
    "SignatureReport",
    "Validation",
    "VerifiedEntry",
    "endorsement_expiry_notify",
    "entry_store",
    "entry_upload",
    "entry_validate",
    "entry_verify",
    "gpg_errors",
    "image_display_refresh",
    "image_site_deprecate",
    "image_site_endorse",
    "pgp_key_register",
    "pgp_key_revoke",
    "site_key_ensure",
    "site_key_passphrase",
]
