"""gunicorn's configuration for the portal, read from the environment (deploy/altostratus.env.example).

    gunicorn -c deploy/gunicorn.conf.py

GUNICORN_BIND (default 127.0.0.1:8000: the reverse proxy in front connects here), GUNICORN_WORKERS
(default 2 x CPUs + 1), GUNICORN_TIMEOUT (seconds, default 30). A malformed value stops start-up with a
message naming the variable, like portal/settings.py does.
"""

from __future__ import annotations

import multiprocessing
import os


def _int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"{name} must be at least {minimum}, got {value}")
    return value


wsgi_app = "portal.wsgi:application"
chdir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
bind = [address.strip() for address in os.environ.get("GUNICORN_BIND", "127.0.0.1:8000").split(",") if address.strip()]
workers = _int("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1)
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = timeout
# Restart workers now and then, so that a slow leak in a long-lived process never grows far.
max_requests = 2000
max_requests_jitter = 200
# Logs go to stdout/stderr: journald (or the container runtime) keeps them.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "INFO").lower()
# Only the proxy on this machine may tell gunicorn a request came over HTTPS; Django reads the header
# named by SECURE_PROXY_SSL_HEADER itself.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
