"""OpenPGP signatures of Marketplace entries (DESIGN.md §2.2): the adapter to gpg, the only code that talks to it.

Keys are inspected in a throw-away keyring, trusted by importing them into the trusted keyring
(``settings.MARKETPLACE_GNUPG_HOME``), and entries are verified against that keyring only: nothing in an
uploaded document is ever imported.

``gpg``: running gpg, and the error kinds: :class:`SigningRefused` (permanent: bad key, wrong passphrase, no
such secret key) and :class:`GpgUnavailable` (transient: gpg could not run or timed out), both a
:class:`SigningError` carrying a ``code``. ``keys``: inspecting, trusting and looking up keys; the site's
secret key. ``signatures``: signing an entry. ``verification``: verifying one (OpenPGP, and legacy XML-DSig
over X.509 certificates through ``x509``). ``smime``: the S/MIME signatures of HEPiX image lists (openssl), whose
signers ``x509`` checks like XML-DSig ones.
"""

from __future__ import annotations

from marketplace.signing.gpg import (
    GpgUnavailable,
    SigningError,
    SigningRefused,
    gpg_binary,
    shutdown_agent,
    trusted_home,
)
from marketplace.signing.keys import (
    MAX_KEY_CHARS,
    KeyInfo,
    key_generate,
    key_inspect,
    key_lookup,
    key_trust,
    key_unlocks,
    secret_key_find,
    site_keyring,
    uid_email,
)
from marketplace.signing.signatures import NOTATION, sign
from marketplace.signing.verification import (
    VERIFIERS,
    KeyFacts,
    SignatureCheck,
    Verifier,
    key_facts,
    register_key_facts,
    register_verifier,
    verify,
)

__all__ = [
    "MAX_KEY_CHARS",
    "NOTATION",
    "VERIFIERS",
    "GpgUnavailable",
    "KeyFacts",
    "KeyInfo",
    "SignatureCheck",
    "SigningError",
    "SigningRefused",
    "Verifier",
    "gpg_binary",
    "key_facts",
    "key_generate",
    "key_inspect",
    "key_lookup",
    "key_trust",
    "key_unlocks",
    "register_key_facts",
    "register_verifier",
    "secret_key_find",
    "shutdown_agent",
    "sign",
    "site_keyring",
    "trusted_home",
    "uid_email",
    "verify",
]
