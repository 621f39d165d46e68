"""Running gpg: the only module that imports python-gnupg or starts a process, and the adapter's error kinds.

Every keyring is opened through :func:`gpg_for`, which starts gpg once to read its configuration: a gpg that
cannot start (missing binary, broken installation) fails there as :class:`GpgUnavailable`, before any work.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeAlias

import gnupg
from django.conf import settings

from core.errors import AdapterError, PermanentError, TransientError

# Never reach out for keys, never take one from a signature packet (gpg >= 2.2.26 can embed the signer's key),
# and never consult gpg's web of trust: the Marketplace decides whom it trusts.
_SAFE_OPTIONS = [
    "--no-auto-key-retrieve",
    "--no-auto-key-import",
    "--auto-key-locate",
    "local",
    "--no-greeting",
    "--trust-model",
    "always",
]
GPG_TIMEOUT_SECONDS = 30
ARMOR_RE = re.compile(r"-----BEGIN PGP SIGNATURE-----\r?\n.*\r?\n-----END PGP SIGNATURE-----", re.DOTALL)
# python-gnupg logs every non-zero gpg exit as a warning; a refused signature is an answer, not an incident.
logging.getLogger("gnupg").setLevel(logging.ERROR)

Gpg: TypeAlias = gnupg.GPG  # what the other signing modules hold a keyring by, without importing gnupg


class SigningError(AdapterError):
    """gpg refused or failed; ``code`` names the check (``pgp-key-invalid``, ``email-not-on-key``…)."""

    default_code = "signing-error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class SigningRefused(SigningError, PermanentError):
    """A key, passphrase or signature was refused (bad key, wrong passphrase, no such secret key)."""


class GpgUnavailable(SigningError, TransientError):
    """gpg itself could not run or did not answer in time; nothing was changed."""

    default_code = "gpg-unavailable"


def gpg_binary() -> str:
    """The gpg executable this adapter runs (looked up once per ``PATH``: every verification asks)."""
    return _gpg_on_path(os.environ.get("PATH", os.defpath))


@functools.lru_cache(maxsize=8)
def _gpg_on_path(path: str) -> str:
    return shutil.which("gpg", path=path) or "/usr/bin/gpg"


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def trusted_home() -> Path:
    """The trusted keyring's GNUPGHOME, created (mode 700) on first use."""
    return private_dir(Path(settings.MARKETPLACE_GNUPG_HOME))


# Opened keyrings by (gpg binary, GNUPGHOME): python-gnupg starts gpg to read its version whenever one is opened,
# which would double the processes of every verification. Only the trusted keyring is kept (scratch ones vanish).
_OPENED: dict[tuple[str, str], Gpg] = {}
_OPENED_LOCK = threading.Lock()


def gpg_for(home: Path) -> Gpg:
    """python-gnupg on the keyring ``home``; :class:`GpgUnavailable` when gpg cannot start."""
    binary = gpg_binary()
    keep = Path(home) == trusted_home()
    if keep and (opened := _OPENED.get((binary, str(home)))) is not None:
        return opened
    try:
        gpg = gnupg.GPG(gpgbinary=binary, gnupghome=str(home), options=list(_SAFE_OPTIONS), encoding="utf-8")
    except (OSError, ValueError) as exc:  # python-gnupg's words for "could not start" / "started and failed"
        raise GpgUnavailable(f"gpg ({binary}) could not run: {exc}") from exc
    if keep:
        with _OPENED_LOCK:
            _OPENED[(binary, str(home))] = gpg
    return gpg


def gpg_run(argv: list[str], *, stdin: bytes | None = None, env: dict[str, str] | None = None) -> bytes:
    """Run ``argv`` (a gpg tool and its arguments) with a timeout; returns its standard output, whatever it exits.

    :class:`GpgUnavailable` when it cannot start or does not finish in time."""
    try:
        process = subprocess.run(  # noqa: S603 - fixed argv built here and by our callers
            argv, input=stdin, capture_output=True, timeout=GPG_TIMEOUT_SECONDS, check=False, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GpgUnavailable(f"{argv[0]} could not run: {exc}") from exc
    return process.stdout


@contextmanager
def scratch_home() -> Iterator[Path]:
    """A throw-away GNUPGHOME (mode 700), removed with any agent gpg started for it."""
    with tempfile.TemporaryDirectory(prefix="alto-gpg-") as tmp:
        home = Path(tmp)
        home.chmod(0o700)
        try:
            yield home
        finally:
            # gpg starts an agent for a keyring it imports into; without this it outlives the deleted directory.
            if any(home.glob("S.gpg-agent*")):
                shutdown_agent(home)


def shutdown_agent(gnupghome: Path) -> None:
    """Stop the gpg-agent that signing started for ``gnupghome`` (tests and one-off keyrings)."""
    gpg_run(
        [shutil.which("gpgconf") or "/usr/bin/gpgconf", "--homedir", str(gnupghome), "--kill", "gpg-agent"],
        env={**os.environ},
    )
