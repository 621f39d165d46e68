"""Where ``alto`` talks to and with which token: options, then the environment, then the profile, then what
``alto login`` stored, which is never sent to another endpoint."""

from __future__ import annotations

import pytest
from alto_client import config


@pytest.fixture
def home(tmp_path, monkeypatch):
    for name in ("ALTO_ENDPOINT", "ALTO_TOKEN", "ALTO_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    directory = tmp_path / "alto"
    directory.mkdir()
    (directory / "config.toml").write_text(
        'default_profile = "lab"\n'
        '[profiles.lab]\nendpoint = "https://lab.example.org/"\nproject = 12\ngpg_key = "ABCD"\n'
        '[profiles.other]\nendpoint = "https://other.example.org"\n'
    )
    return directory


def test_the_default_profile_names_the_endpoint_project_and_key(home):
    settings = config.load()
    assert (settings.profile, settings.endpoint, settings.project, settings.gpg_key, settings.token) == (
        "lab",
        "https://lab.example.org",
        12,
        "ABCD",
        None,
    )


def test_options_beat_the_environment_which_beats_the_profile(home, monkeypatch):
    monkeypatch.setenv("ALTO_ENDPOINT", "https://env.example.org")
    assert config.load().endpoint == "https://env.example.org"
    assert config.load(endpoint="https://option.example.org").endpoint == "https://option.example.org"
    monkeypatch.setenv("ALTO_PROFILE", "other")
    monkeypatch.delenv("ALTO_ENDPOINT")
    assert config.load().endpoint == "https://other.example.org"


def test_an_unknown_profile_is_a_usage_error(home):
    with pytest.raises(config.ConfigError, match="no profile 'typo'.*lab, other"):
        config.load(profile="typo")


def test_a_stored_token_goes_only_to_the_endpoint_it_was_made_for(home, monkeypatch):
    settings = config.load()
    config.store_token(settings, token="lab-token", token_id=3, username="ada")
    assert config.load().token == "lab-token"
    assert config.load(endpoint="https://elsewhere.example.org").token is None
    monkeypatch.setenv("ALTO_TOKEN", "from-env")
    assert config.load(endpoint="https://elsewhere.example.org").token == "from-env"


def test_a_broken_config_file_is_reported_with_its_path(home):
    (home / "config.toml").write_text("default_profile = \n")
    with pytest.raises(config.ConfigError, match="config.toml"):
        config.load()
