from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from portal.settings import env_bool, env_int, env_list
from tests.conftest import ROOT


def test_env_bool_reads_the_usual_spellings(monkeypatch):
    for raw, expected in [("1", True), ("yes", True), ("On", True), ("0", False), ("false", False), ("", False)]:
        monkeypatch.setenv("X_FLAG", raw)
        assert env_bool("X_FLAG", not expected) is expected


def test_env_bool_refuses_a_value_it_cannot_read(monkeypatch):
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG must be a boolean.*'maybe'"):
        env_bool("X_FLAG", False)


def test_env_int_refuses_text_and_values_below_the_minimum(monkeypatch):
    monkeypatch.setenv("X_PORT", "eighty")
    with pytest.raises(ImproperlyConfigured, match="X_PORT must be an integer"):
        env_int("X_PORT", 1)
    monkeypatch.setenv("X_PORT", "0")
    with pytest.raises(ImproperlyConfigured, match="X_PORT must be at least 1"):
        env_int("X_PORT", 1, minimum=1)


def test_env_list_splits_on_commas_and_drops_blanks(monkeypatch):
    monkeypatch.setenv("X_HOSTS", "a.example, b.example,,")
    assert env_list("X_HOSTS", []) == ["a.example", "b.example"]


def _start_django(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DATABASE_URL", "nonsense://x", "DATABASE_URL is not a valid database URL"),
        ("CELERY_BROKER_URL", "kafka://x", "CELERY_BROKER_URL must be"),
        ("DEBUG", "perhaps", "DEBUG must be a boolean"),
        ("EMAIL_PORT", "smtp", "EMAIL_PORT must be an integer"),
        ("CACHE_URL", "memcached://127.0.0.1", "CACHE_URL must be redis://"),
        ("NUM_PROXIES", "-1", "NUM_PROXIES must be at least 0"),
        ("LOGIN_FAILURE_LIMIT", "0", "LOGIN_FAILURE_LIMIT must be at least 1"),
        ("LOGIN_LOCKOUT_MINUTES", "soon", "LOGIN_LOCKOUT_MINUTES must be an integer"),
        ("SECURE_HSTS_SECONDS", "a year", "SECURE_HSTS_SECONDS must be an integer"),
        ("SECURE_SSL_REDIRECT", "maybe", "SECURE_SSL_REDIRECT must be a boolean"),
        ("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto: https", "SECURE_PROXY_SSL_HEADER must be a header name"),
    ],
)
def test_start_up_stops_on_a_malformed_variable_naming_it(variable, value, message):
    env = {variable: value}
    if variable == "EMAIL_PORT":
        env["EMAIL_HOST"] = "smtp.example.org"
    result = _start_django(**env)
    assert result.returncode != 0
    assert message in result.stderr


def test_secret_key_is_generated_once_into_var(tmp_path):
    script = "from django.conf import settings; print(settings.SECRET_KEY)"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", "ALTO_VAR_DIR": str(tmp_path)}
    env.pop("SECRET_KEY", None)
    first = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    second = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert len(first.stdout.strip()) >= 50
    assert first.stdout == second.stdout
    assert (tmp_path / "secret-key").stat().st_mode & 0o777 == 0o600


def test_hsts_is_on_for_a_year_once_cookies_are_https_only():
    script = "from django.conf import settings as s; print(s.SECURE_HSTS_SECONDS, s.SECURE_PROXY_SSL_HEADER)"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings"}
    secure = {**env, "SESSION_COOKIE_SECURE": "true", "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=secure, capture_output=True, text=True)
    assert result.stdout.split() == ["31536000", "('HTTP_X_FORWARDED_PROTO',", "'https')"], result.stderr
    env.pop("SESSION_COOKIE_SECURE", None)
    env.pop("SECURE_PROXY_SSL_HEADER", None)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.stdout.split() == ["0", "None"], result.stderr


def test_gunicorn_config_stops_on_a_malformed_variable_naming_it():
    result = subprocess.run(
        [sys.executable, "deploy/gunicorn.conf.py"],
        cwd=ROOT,
        env={**os.environ, "GUNICORN_WORKERS": "many"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "GUNICORN_WORKERS must be an integer, got 'many'" in result.stderr


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgresql_compiles_no_query_just_in_time():
    """JIT compilation costs a short query 50-500 ms whenever the planner expects it to be costly."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW jit")
        assert cursor.fetchone()[0] == "off"


def test_a_database_url_keeps_its_own_connection_options_beside_jit_off():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; "
            "print(settings.DATABASES['default']['OPTIONS']['options'])",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": "postgres://u@127.0.0.1:5432/x?options=-c%20statement_timeout%3D5000",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "-c statement_timeout=5000 -c jit=off", result.stderr
