"""Fixtures for the ``alto`` client's tests: a live portal over real HTTP (pytest-django's ``live_server``) and
``alto(...)``, which runs the command line against it the way a user's shell would (its own configuration
directory, the creator's real gpg keyring)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from alto_client.cli import alto as alto_command
from click.testing import CliRunner

from tests.compute.conftest import (  # noqa: F401 - fixtures shared with the compute tests
    IMAGE,
    _signed_cache,
    entry_for,
    keyring,
    networks,
    outsider,
    owner,
    owner_key,
    registered,
    staff,
    trusted_keyring,
    types,
)
from tests.marketplace.keys import pgp_keys  # noqa: F401 - the session's OpenPGP keys


@dataclass
class Run:
    """One ``alto`` invocation: its exit code, standard output and standard error."""

    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def alto(live_server, tmp_path, pgp_keys) -> Callable[..., Run]:  # noqa: F811 - the fixture imported above
    """``alto("image", "search", token=…, input=…, endpoint=…)``: run the command line against the live portal.

    The configuration directory is the test's own (``XDG_CONFIG_HOME``); ``GNUPGHOME`` is the keyring holding
    the session keys' secret halves."""
    config_home = tmp_path / "alto-config"

    def run(*args: str, token: str | None = None, input: str | None = None, endpoint: str | None = None) -> Run:
        env = {
            "ALTO_ENDPOINT": endpoint or live_server.url,
            "ALTO_TOKEN": token,
            "ALTO_PROFILE": None,
            "XDG_CONFIG_HOME": str(config_home),
            "GNUPGHOME": str(pgp_keys.creator.gnupghome),
            "COLUMNS": "200",
        }
        result = CliRunner().invoke(alto_command, list(args), input=input, env=env, catch_exceptions=False)
        return Run(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def token_of() -> Callable[..., str]:
    """``token_of(user)``: a new API token of ``user`` (as ``alto login`` or ``alto token create`` makes one)."""
    from knox.models import AuthToken

    def make(user) -> str:
        _row, token = AuthToken.objects.create(user)
        return token

    return make
