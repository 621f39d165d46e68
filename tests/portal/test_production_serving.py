"""The portal as a site deploys it: gunicorn with deploy/gunicorn.conf.py, production settings, static
files collected and served by whitenoise, behind a TLS-terminating proxy (played by the test's headers)."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

HTTPS = {"X-Forwarded-Proto": "https", "Host": "127.0.0.1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# The test run's own settings, and the browser tests' async escape hatch, which a deployment never has.
NOT_INHERITED = {"DATABASE_URL", "CACHE_URL", "CELERY_RESULT_BACKEND", "DJANGO_ALLOW_ASYNC_UNSAFE"}


def production_env(tmp: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    return {
        **env,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "ALTO_VAR_DIR": str(tmp / "var"),
        "STATIC_ROOT": str(tmp / "static"),
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",
        "SESSION_COOKIE_SECURE": "true",
        "SECURE_SSL_REDIRECT": "true",
        "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
        "NUM_PROXIES": "1",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "1",
    }


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory) -> Iterator[tuple[int, Path]]:
    tmp = tmp_path_factory.mktemp("production")
    port = free_port()
    env = production_env(tmp, port)
    collected = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input", "-v0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collected.returncode == 0, collected.stderr
    log = open(tmp / "gunicorn.log", "w")  # noqa: SIM115 - kept open for the server's life
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not start:\n" + (tmp / "gunicorn.log").read_text()) from None
                time.sleep(0.2)
        yield port, tmp
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def get(port: int, path: str, headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


def assert_hardened(response: http.client.HTTPResponse) -> None:
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_gunicorn_answers_the_health_check_with_the_security_headers(gunicorn):
    port, _tmp = gunicorn
    response, body = get(port, "/healthz", HTTPS)
    assert response.status == 200, body
    assert json.loads(body)["status"] == "ok"
    assert_hardened(response)
    assert response.headers["X-Frame-Options"] == "DENY"


def test_whitenoise_serves_the_collected_static_files_with_the_security_headers(gunicorn):
    port, tmp = gunicorn
    manifest = json.loads((tmp / "static" / "staticfiles.json").read_text())
    hashed = manifest["paths"]["css/site.css"]
    response, body = get(port, f"/static/{hashed}", HTTPS)
    assert response.status == 200
    assert body == (ROOT / "static" / "css" / "site.css").read_bytes()
    assert response.headers["Content-Type"].startswith("text/css")
    assert "immutable" in response.headers["Cache-Control"]
    assert_hardened(response)


def test_plain_http_is_redirected_to_https_but_the_health_check_is_not(gunicorn):
    port, _tmp = gunicorn
    response, _body = get(port, "/marketplace/", {"Host": "127.0.0.1"})
    assert response.status == 301
    assert response.headers["Location"] == "https://127.0.0.1/marketplace/"
    response, _body = get(port, "/healthz", {"Host": "127.0.0.1"})
    assert response.status == 200
    assert "Strict-Transport-Security" not in response.headers  # HSTS is only sent over HTTPS


def test_errors_are_the_sites_pages_not_debug_pages(gunicorn):
    port, _tmp = gunicorn
    response, body = get(port, "/no-such-page/", HTTPS)
    assert response.status == 404
    assert b"Traceback" not in body and b"DEBUG" not in body
    response, _body = get(port, "/healthz", {**HTTPS, "Host": "evil.example"})
    assert response.status == 400


def test_check_deploy_on_the_example_environment_reports_only_the_accepted_warning(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    for line in (ROOT / "deploy" / "altostratus.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALTO_VAR_DIR=str(tmp_path / "var"),
        STATIC_ROOT=str(tmp_path / "static"),
    )
    checked = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stderr
    output = checked.stdout + checked.stderr
    assert "System check identified 1 issue" in output, output
    assert "security.W021" in output  # HSTS preload: a commitment each site makes for itself (README)
