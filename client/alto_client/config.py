"""Where alto talks to and with which token: ``~/.config/alto/config.toml`` profiles, ``ALTO_ENDPOINT`` /
``ALTO_TOKEN``, and the credentials ``alto login`` stores (``~/.config/alto/credentials.json``, mode 600).

config.toml::

    default_profile = "lab"          # optional; else "default"

    [profiles.lab]
    endpoint = "https://cloud.lab.example.org"
    project = 12                     # optional: the project VMs and volumes go to (else your personal one)
    gpg_key = "0123…CDEF"            # optional: the OpenPGP key `alto image sign` uses
    gnupghome = "~/.gnupg-lab"       # optional: its keyring (else GNUPGHOME, else gpg's default)

Precedence: command-line options, then the environment, then the profile, then what ``alto login`` stored.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"


class ConfigError(Exception):
    """The configuration file cannot be read or names an unknown profile."""


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "alto"


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _read_credentials(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return data if isinstance(data, dict) else {}


@dataclass
class Settings:
    profile: str
    endpoint: str
    token: str | None
    project: int | None = None
    gpg_key: str | None = None
    gnupghome: str | None = None
    config_dir: Path = field(default_factory=config_dir)

    @property
    def credentials_path(self) -> Path:
        return self.config_dir / "credentials.json"


def load(*, profile: str | None = None, endpoint: str | None = None) -> Settings:
    """The settings for ``profile`` (option, ``ALTO_PROFILE``, the file's ``default_profile``, "default")."""
    directory = config_dir()
    config = _read_config(directory / "config.toml")
    profiles = config.get("profiles", {})
    name = profile or os.environ.get("ALTO_PROFILE") or config.get("default_profile") or "default"
    if (profile or os.environ.get("ALTO_PROFILE")) and name not in profiles and name != "default":
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"no profile {name!r} in {directory / 'config.toml'} (profiles: {known})")
    section = profiles.get(name, {})
    stored = _read_credentials(directory / "credentials.json").get(name, {})
    chosen_endpoint = (
        endpoint
        or os.environ.get("ALTO_ENDPOINT")
        or section.get("endpoint")
        or stored.get("endpoint")
        or DEFAULT_ENDPOINT
    ).rstrip("/")
    token = os.environ.get("ALTO_TOKEN") or (stored.get("token") if stored.get("endpoint") == chosen_endpoint else None)
    project = section.get("project")
    return Settings(
        profile=name,
        endpoint=chosen_endpoint,
        token=token or None,
        project=int(project) if project is not None else None,
        gpg_key=section.get("gpg_key"),
        gnupghome=os.path.expanduser(section["gnupghome"]) if section.get("gnupghome") else None,
        config_dir=directory,
    )


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON readable by its owner only (mode 600 from the start, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def store_token(settings: Settings, *, token: str, token_id: int, username: str) -> Path:
    """Remember ``token`` for the profile and endpoint (credentials.json, mode 600)."""
    path = settings.credentials_path
    data = _read_credentials(path)
    data[settings.profile] = {
        "endpoint": settings.endpoint,
        "token": token,
        "token_id": token_id,
        "username": username,
    }
    _write_private(path, data)
    return path


def forget_token(settings: Settings) -> dict[str, Any] | None:
    """Drop the profile's stored token; what was stored, if anything."""
    path = settings.credentials_path
    data = _read_credentials(path)
    removed = data.pop(settings.profile, None)
    if removed is not None:
        _write_private(path, data)
    return removed


def stored_login(settings: Settings) -> dict[str, Any]:
    return _read_credentials(settings.credentials_path).get(settings.profile, {})
