"""Settings for Altostratus, read from the environment.

Every knob is an environment variable (see the table in README.md). The defaults are the embedded
ones used by ``make run``: SQLite and a filesystem Celery broker under ``var/``, libvirt's test driver,
e-mail to the console, LDAP off. A malformed value stops start-up with a message naming the variable.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from celery.schedules import crontab
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no, on/off), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_path(name: str, default: Path) -> Path:
    raw = os.environ.get(name)
    return Path(raw).expanduser().resolve() if raw else default


def _secret_key(var_dir: Path) -> str:
    """SECRET_KEY from the environment, or one generated once and kept in ``var/secret-key``."""
    if key := os.environ.get("SECRET_KEY"):
        return key
    path = var_dir / "secret-key"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


VAR_DIR = env_path("ALTO_VAR_DIR", BASE_DIR / "var")
SECRET_KEY = _secret_key(VAR_DIR)
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_NAME = env_str("SITE_NAME", "Altostratus")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "csp",
    "axes",
    # Our apps, lowest layer first (DESIGN.md §1): nothing imports an app listed above it.
    "core",
    "accounts",
    "marketplace",
    "storage",
    "compute",
    "portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before whitenoise, so that static files carry the policy too.
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.site",
            ],
        },
    },
]

# Database: DATABASE_URL (postgres://…), or SQLite in var/ with WAL for the embedded default.
DATABASE_URL = env_str("DATABASE_URL", "")
if DATABASE_URL:
    try:
        DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
    except Exception as exc:  # dj_database_url raises plain ValueError/KeyError on bad URLs
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    # No JIT compilation: the portal's queries are short, and PostgreSQL compiles any query it expects to be costly,
    # which takes 50-500 ms (an endorser list of 50 rows took 1.3 s at a million entries, 1.2 s of it compiling).
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["options"] = f"{_options.get('options', '')} -c jit=off".strip()
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(VAR_DIR / "altostratus.sqlite3")}}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets the web process read while the worker writes; IMMEDIATE takes the write lock at
        # BEGIN so that two writers queue up instead of failing half-way with "database is locked".
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # The covering indexes of the Marketplace's search (INCLUDE columns) are PostgreSQL's; SQLite builds
    # the same indexes without them, which is all the embedded default needs.
    SILENCED_SYSTEM_CHECKS = ["models.W039", "models.W040"]
    # A file, not memory, so that a Celery worker started by a test sees the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-altostratus.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# The login lockout's backend goes in front of these (and of LDAP's) below, under "Login lockout".
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
# Dates and times are written one way everywhere (portal/formats/en/formats.py).
FORMAT_MODULE_PATH = ["portal.formats"]
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = env_path("STATIC_ROOT", VAR_DIR / "static")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# Without collectstatic (tests, DEBUG) whitenoise serves straight from the finders.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# HTTPS and browser hardening (deploy/altostratus.env.example turns the HTTPS ones on). HSTS defaults to a
# year once cookies are HTTPS-only, since such a site is reached over HTTPS anyway.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if SESSION_COOKIE_SECURE else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# The load balancer's plain-HTTP health probe is not redirected.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
# The header a TLS-terminating proxy sets to "https" (e.g. X-Forwarded-Proto); empty: requests are
# secure only when they reach us over TLS. Never set it unless the proxy always sets (or strips) it.
_proxy_ssl_header = env_str("SECURE_PROXY_SSL_HEADER", "").strip()
if _proxy_ssl_header:
    if not _proxy_ssl_header.replace("-", "").isalnum():
        raise ImproperlyConfigured(f"SECURE_PROXY_SSL_HEADER must be a header name, got {_proxy_ssl_header!r}")
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Content Security Policy (django-csp) on every answer, pages, API and static files alike: our own origin
# only, no inline script. The one inline script left, drf-spectacular's Swagger UI set-up, carries the
# request's nonce (templates/drf_spectacular/swagger_ui.html); a nonce appears in the header only on
# answers whose template used it. Swagger UI's stylesheet draws its icons with data: images.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    }
}

# E-mail: console by default, SMTP when EMAIL_HOST is set.
EMAIL_HOST = env_str("EMAIL_HOST", "")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "altostratus@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
ADMINS = [("Site administrators", a) for a in env_list("ADMIN_EMAILS", [])]

# LDAP (django-auth-ldap): off unless AUTH_LDAP_SERVER_URI is set. The accounts app reads the rest.
AUTH_LDAP_SERVER_URI = env_str("AUTH_LDAP_SERVER_URI", "")
AUTH_LDAP_BIND_DN = env_str("AUTH_LDAP_BIND_DN", "")
AUTH_LDAP_BIND_PASSWORD = env_str("AUTH_LDAP_BIND_PASSWORD", "")
AUTH_LDAP_USERS_OU = env_str("AUTH_LDAP_USERS_OU", "")
AUTH_LDAP_ACCESS_GROUP = env_str("AUTH_LDAP_ACCESS_GROUP", "")
AUTH_LDAP_ADMIN_GROUP = env_str("AUTH_LDAP_ADMIN_GROUP", "")
if AUTH_LDAP_SERVER_URI:
    if not AUTH_LDAP_USERS_OU:
        raise ImproperlyConfigured("AUTH_LDAP_USERS_OU must be set when AUTH_LDAP_SERVER_URI is set")
    AUTHENTICATION_BACKENDS = ["accounts.backends.LDAPBackend", *AUTHENTICATION_BACKENDS]

# accounts
# django-auth-ldap: users are found by ``uid`` one level under AUTH_LDAP_USERS_OU; only members of
# AUTH_LDAP_ACCESS_GROUP may log in; members of AUTH_LDAP_ADMIN_GROUP are staff. Groups are
# ``groupOfNames`` (``member`` holds user DNs, OpenLDAP's usual choice and what accounts/directory.py
# writes) unless AUTH_LDAP_GROUP_TYPE=groupOfUniqueNames (``uniqueMember``). Group searches run under
# AUTH_LDAP_GROUPS_OU, by default the parent of the access group.
AUTH_LDAP_GROUP_TYPE_NAME = env_str("AUTH_LDAP_GROUP_TYPE", "groupOfNames")
if AUTH_LDAP_GROUP_TYPE_NAME not in {"groupOfNames", "groupOfUniqueNames"}:
    raise ImproperlyConfigured(
        f"AUTH_LDAP_GROUP_TYPE must be groupOfNames or groupOfUniqueNames, got {AUTH_LDAP_GROUP_TYPE_NAME!r}"
    )
AUTH_LDAP_GROUPS_OU = env_str("AUTH_LDAP_GROUPS_OU", AUTH_LDAP_ACCESS_GROUP.partition(",")[2])
AUTH_LDAP_TIMEOUT = env_int("AUTH_LDAP_TIMEOUT", 5, minimum=1)
# Seconds between two reads of the access group: a person removed from it is deactivated (tokens and
# sessions end) within this time (accounts.directory_sync).
AUTH_LDAP_SYNC_SECONDS = env_int("AUTH_LDAP_SYNC_SECONDS", 60, minimum=1)


def ldap_auth_settings(
    *,
    server_uri: str,
    users_ou: str,
    groups_ou: str,
    access_group: str,
    admin_group: str,
    group_type: str,
    timeout: int,
) -> dict[str, object]:
    """The django-auth-ldap settings for these directory coordinates (tests apply them to a test slapd)."""
    import ldap
    from django_auth_ldap.config import GroupOfNamesType, GroupOfUniqueNamesType, LDAPSearch

    config: dict[str, object] = {
        "AUTH_LDAP_SERVER_URI": server_uri,
        "AUTH_LDAP_USER_SEARCH": LDAPSearch(users_ou, ldap.SCOPE_ONELEVEL, "(uid=%(user)s)"),
        "AUTH_LDAP_USER_ATTR_MAP": {"first_name": "givenName", "last_name": "sn", "email": "mail"},
        "AUTH_LDAP_ALWAYS_UPDATE_USER": True,
        "AUTH_LDAP_GROUP_TYPE": GroupOfUniqueNamesType() if group_type == "groupOfUniqueNames" else GroupOfNamesType(),
        "AUTH_LDAP_GROUP_SEARCH": LDAPSearch(groups_ou, ldap.SCOPE_SUBTREE, f"(objectClass={group_type})"),
        "AUTH_LDAP_REQUIRE_GROUP": access_group or None,
        # is_active follows the access group at each login: someone deactivated after leaving it
        # (accounts.directory_sync) is active again once put back.
        "AUTH_LDAP_USER_FLAGS_BY_GROUP": {
            **({"is_staff": admin_group} if admin_group else {}),
            **({"is_active": access_group} if access_group else {}),
        },
        "AUTH_LDAP_CONNECTION_OPTIONS": {ldap.OPT_NETWORK_TIMEOUT: timeout, ldap.OPT_TIMEOUT: timeout},
    }
    return config


if AUTH_LDAP_SERVER_URI:
    globals().update(
        ldap_auth_settings(
            server_uri=AUTH_LDAP_SERVER_URI,
            users_ou=AUTH_LDAP_USERS_OU,
            groups_ou=AUTH_LDAP_GROUPS_OU,
            access_group=AUTH_LDAP_ACCESS_GROUP,
            admin_group=AUTH_LDAP_ADMIN_GROUP,
            group_type=AUTH_LDAP_GROUP_TYPE_NAME,
            timeout=AUTH_LDAP_TIMEOUT,
        )
    )

# Site default quotas of a new project (DESIGN §3); staff change a project's quota afterwards.
ACCOUNTS_QUOTA_DEFAULTS = {
    "instances": env_int("QUOTA_INSTANCES", 10, minimum=0),
    "vcpus": env_int("QUOTA_VCPUS", 20, minimum=0),
    "ram_mib": env_int("QUOTA_RAM_MIB", 40960, minimum=0),
    "volume_gib": env_int("QUOTA_VOLUME_GIB", 500, minimum=0),
    "volumes": env_int("QUOTA_VOLUMES", 10, minimum=0),
    "public_ips": env_int("QUOTA_PUBLIC_IPS", 2, minimum=0),
}
# Compute (DESIGN §4): where the scheduler puts a new VM (``spread``: the host with most free RAM;
# ``pack``: the one with least, filling hosts one by one) and the limits of a request.
SCHEDULER_STRATEGY = env_str("SCHEDULER_STRATEGY", "spread").strip().lower()
if SCHEDULER_STRATEGY not in ("spread", "pack"):
    raise ImproperlyConfigured(f"SCHEDULER_STRATEGY must be spread or pack, not {SCHEDULER_STRATEGY!r}")
COMPUTE_VOLATILE_MAX_GIB = env_int("COMPUTE_VOLATILE_MAX_GIB", 100, minimum=0)
COMPUTE_USER_DATA_MAX_BYTES = env_int("COMPUTE_USER_DATA_MAX_BYTES", 64 * 1024, minimum=0)
# Reconciliation (DESIGN §4): how often libvirt's domains are compared with the database (and usage recorded);
# how long an instance may stay in a worker step (scheduled … terminating) before it is moved to error; how long a
# terminated root disk stays in QUARANTINE_DIR before it is deleted (StratusLab kept them 48 hours).
COMPUTE_RECONCILE_SECONDS = env_int("COMPUTE_RECONCILE_SECONDS", 60, minimum=10)
# How long the API waits for a host's worker to send a VM's console log (the log lives on the host).
COMPUTE_CONSOLE_TIMEOUT = env_int("COMPUTE_CONSOLE_TIMEOUT", 10, minimum=1)
INSTANCE_STEP_DEADLINE_MINUTES = env_int("INSTANCE_STEP_DEADLINE_MINUTES", 30, minimum=1)
QUARANTINE_DIR = env_path("QUARANTINE_DIR", VAR_DIR / "quarantine")
QUARANTINE_HOURS = env_int("QUARANTINE_HOURS", 48, minimum=0)
# Where a VM's files live on its host (INSTANCE_DIR/<uuid>/: root.qcow2, volatile.qcow2, seed.iso, console.log)
# (terminated root disks wait in QUARANTINE_DIR, above); the libvirt domain type (kvm on real hosts, qemu = TCG).
INSTANCE_DIR = env_path("INSTANCE_DIR", VAR_DIR / "instances")
LIBVIRT_DOMAIN_TYPE = env_str("LIBVIRT_DOMAIN_TYPE", "qemu").strip().lower()
if LIBVIRT_DOMAIN_TYPE not in ("qemu", "kvm"):
    raise ImproperlyConfigured(f"LIBVIRT_DOMAIN_TYPE must be qemu or kvm, not {LIBVIRT_DOMAIN_TYPE!r}")
# Networking (README "Networking"): nftables rules live in the table ``ip altostratus``, applied with NFT_COMMAND
# (shlex-split; e.g. ``ssh root@front nft``) by the worker consuming FRONTEND_QUEUE on the front end, which routes
# the VM networks. Port translation: a VM on ``local`` gets a front-end port from PORT_TRANSLATION_RANGE for each of
# its image's inbound ports in PORT_TRANSLATION_PORTS, opened on PORT_TRANSLATION_ADDRESS (an IPv4 address of the
# front end; PORT_TRANSLATION_HOST when that is an address) and shown as PORT_TRANSLATION_HOST (a name or an
# address; empty turns port translation off). Firewalls: the ports users may open on their VMs.
NFT_COMMAND = env_str("NFT_COMMAND", "nft")
# Whether the workers make each class's libvirt network on their hosts (bridge, NAT/routing, DHCP for the leases);
# off for a site that makes its hosts' bridges itself (the VMs' NICs join Network.bridge either way).
COMPUTE_MANAGE_NETWORKS = env_bool("COMPUTE_MANAGE_NETWORKS", True)
FRONTEND_QUEUE = env_str("FRONTEND_QUEUE", "frontend").strip()  # empty: no front-end worker, no rules sent
PORT_TRANSLATION_HOST = env_str("PORT_TRANSLATION_HOST", "").strip()
PORT_TRANSLATION_ADDRESS = env_str("PORT_TRANSLATION_ADDRESS", "").strip() or PORT_TRANSLATION_HOST


def _port_range(name: str, default: str) -> tuple[int, int]:
    text = env_str(name, default).strip()
    low, _, high = text.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a port range like 15000-17000, not {text!r}") from None
    if not 1 <= first <= last <= 65535:
        raise ImproperlyConfigured(f"{name} must be a range of ports 1-65535, not {text!r}")
    return first, last


def _ports(name: str, default: list[str]) -> list[tuple[int, int]]:
    return [_parse_ports(name, part) for part in env_list(name, default)]


def _parse_ports(name: str, part: str) -> tuple[int, int]:
    low, _, high = part.strip().partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        raise ImproperlyConfigured(f"{name}: {part!r} is not a port or a port range") from None
    if not 1 <= first <= last <= 65535:
        raise ImproperlyConfigured(f"{name}: {part!r} is not within 1-65535")
    return first, last


PORT_TRANSLATION_PORTS = [first for first, _last in _ports("PORT_TRANSLATION_PORTS", ["22", "80"])]
PORT_TRANSLATION_RANGE = _port_range("PORT_TRANSLATION_RANGE", "15000-17000")
if PORT_TRANSLATION_HOST:
    try:
        ipaddress.IPv4Address(PORT_TRANSLATION_ADDRESS)
    except ValueError:
        raise ImproperlyConfigured(
            f"PORT_TRANSLATION_ADDRESS must be the front end's IPv4 address, not {PORT_TRANSLATION_ADDRESS!r}"
        ) from None
FIREWALL_USER_PORTS = _ports("FIREWALL_USER_PORTS", ["22", "80", "443", "1024-65535"])
# A worker started with WORKER_ALL_HOST_QUEUES consumes host.<name> of every registered host besides its -Q
# queues (make run's single worker); production workers run with -Q default,host.<name> and leave it off.
WORKER_ALL_HOST_QUEUES = env_bool("WORKER_ALL_HOST_QUEUES", False)
# Hours an e-mailed password-reset link stays valid.
PASSWORD_RESET_TIMEOUT = env_int("PASSWORD_RESET_TIMEOUT_HOURS", 24, minimum=1) * 3600
# Knox's token model, named so that accounts.ApiToken can point at it.
KNOX_TOKEN_MODEL = "knox.AuthToken"  # noqa: S105 - a model name, not a secret
# The portal's address as users reach it, for links in e-mails.
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
# Longest lifetime a user may give an API token, in days.
ACCOUNTS_TOKEN_MAX_DAYS = env_int("TOKEN_MAX_DAYS", 365, minimum=1)
# Hours a mailed link that confirms an e-mail address (registration, change of address) stays valid.
EMAIL_CONFIRMATION_HOURS = env_int("EMAIL_CONFIRMATION_HOURS", 48, minimum=1)

# Celery: a filesystem broker in var/broker/ by default; Redis or RabbitMQ through CELERY_BROKER_URL.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
_broker_scheme = urlsplit(CELERY_BROKER_URL).scheme
if _broker_scheme not in {"filesystem", "redis", "rediss", "amqp", "amqps", "pyamqp"}:
    raise ImproperlyConfigured(
        f"CELERY_BROKER_URL must be filesystem://, redis://, rediss:// or amqp://, got {CELERY_BROKER_URL!r}"
    )
CELERY_BROKER_DIR = env_path("CELERY_BROKER_DIR", VAR_DIR / "broker")
if _broker_scheme == "filesystem":
    for _sub in ("queue", "processed", "control"):
        (CELERY_BROKER_DIR / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
    }
    _default_results = (VAR_DIR / "celery-results").as_uri()
    (VAR_DIR / "celery-results").mkdir(parents=True, exist_ok=True)
elif _broker_scheme.startswith("redis"):
    _default_results = CELERY_BROKER_URL
else:
    _default_results = "rpc://"
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", _default_results)
CELERY_RESULT_EXPIRES = 3600
# General work goes to the queue "default"; a hypervisor host's work to "host.<name>" (DESIGN §4), so that
# deployed workers can be given `-Q default,host.<name>` (deploy/altostratus-worker.service).
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fix-up closes the database connections before and after every task unless this is set: each task
# then connects again (on PostgreSQL a new backend process per task). With it the fix-up closes them only every
# this many tasks, and portal/celery.py does around each task what Django does around each request
# (close_old_connections: CONN_MAX_AGE and the connection health check decide, so a dead connection is replaced).
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    "core.idempotency_purge": {"task": "core.idempotency_purge", "schedule": 3600.0},  # hourly
    # A no-op without LDAP; with it, people who left the access group are deactivated.
    "accounts.directory_sync": {"task": "accounts.directory_sync", "schedule": float(AUTH_LDAP_SYNC_SECONDS)},
    "compute.reconcile": {"task": "compute.reconcile", "schedule": float(COMPUTE_RECONCILE_SECONDS)},
    "compute.quarantine_purge": {"task": "compute.quarantine_purge", "schedule": 3600.0},  # hourly
}
if FRONTEND_QUEUE:
    # The front end's nftables rules from the database: restores them after a reboot or a hand edit.
    CELERY_BEAT_SCHEDULE["compute.frontend_sync"] = {
        "task": "compute.frontend_sync",
        "schedule": float(COMPUTE_RECONCILE_SECONDS),
        # A run nobody took before the next is due is dropped: the next one does the same work.
        "options": {"queue": FRONTEND_QUEUE, "expires": float(COMPUTE_RECONCILE_SECONDS)},
    }

# libvirt: the URI of the simulated host that seed_demo registers.
LIBVIRT_DEFAULT_URI = env_str("LIBVIRT_DEFAULT_URI", "test:///default")

# Marketplace (format and signatures, DESIGN.md §2.1-2.3): the largest entry document accepted, and the
# trusted OpenPGP keyring (a private GNUPGHOME, mode 700, created on demand) that verifies entries.
MARKETPLACE_MAX_ENTRY_BYTES = env_int("MARKETPLACE_MAX_ENTRY_BYTES", 1024 * 1024, minimum=1024)
MARKETPLACE_GNUPG_HOME = env_path("MARKETPLACE_GNUPG_HOME", VAR_DIR / "gnupg")
# Legacy StratusLab entries (XML-DSig over X.509): the CA certificates (and CRLs) that vouch for their signers, laid
# out as the grid's /etc/grid-security/certificates. Empty or missing: no legacy entry is accepted.
MARKETPLACE_X509_CA_DIR = env_str("MARKETPLACE_X509_CA_DIR", "")
# The only directories an entry's file: locations may point into (comma-separated absolute paths; empty: no
# file: locations at all). The default is where seed_demo writes its demo images (portal/demo.py).
MARKETPLACE_FILE_LOCATION_DIRS = env_list("MARKETPLACE_FILE_LOCATION_DIRS", [str(VAR_DIR / "demo-images")])
if any(not os.path.isabs(directory) for directory in MARKETPLACE_FILE_LOCATION_DIRS):
    raise ImproperlyConfigured(
        f"MARKETPLACE_FILE_LOCATION_DIRS must be absolute paths, got {','.join(MARKETPLACE_FILE_LOCATION_DIRS)!r}"
    )
# Marketplace (site policy and site key, DESIGN.md §2.4): `manage.py create_site_key` makes the site's OpenPGP
# key (uid "SITE_NAME <MARKETPLACE_SITE_KEY_EMAIL>") in its own keyring, protected by the passphrase in the
# file (made mode 600 if missing), and records its fingerprint in the database: entries it signs are the
# site's endorsements. Endorsers are mailed when their current entries expire within the notice period.
MARKETPLACE_SITE_GNUPG_HOME = env_path("MARKETPLACE_SITE_GNUPG_HOME", VAR_DIR / "site-gnupg")
MARKETPLACE_SITE_KEY_PASSPHRASE_FILE = env_path("MARKETPLACE_SITE_KEY_PASSPHRASE_FILE", VAR_DIR / "site-key.passphrase")
MARKETPLACE_SITE_KEY_EMAIL = parseaddr(env_str("MARKETPLACE_SITE_KEY_EMAIL", DEFAULT_FROM_EMAIL))[1].strip().lower()
if "@" not in MARKETPLACE_SITE_KEY_EMAIL:
    raise ImproperlyConfigured("MARKETPLACE_SITE_KEY_EMAIL (default: DEFAULT_FROM_EMAIL) must be an e-mail address")
MARKETPLACE_EXPIRY_NOTICE_DAYS = env_int("MARKETPLACE_EXPIRY_NOTICE_DAYS", 3, minimum=1)
CELERY_BEAT_SCHEDULE["marketplace.notify_expiring"] = {
    "task": "marketplace.notify_expiring",
    "schedule": crontab(hour=6, minute=0),  # daily, UTC
}
# Images whose verdict the clock changed (an endorsement expired) are evaluated by the console until this runs.
CELERY_BEAT_SCHEDULE["marketplace.verdicts_refresh"] = {"task": "marketplace.verdicts_refresh", "schedule": 300.0}
# HEPiX image lists (`manage.py subscribe_imagelist`): the largest signed list read, the seconds one read may wait
# and a whole list may take, the seconds one image's download (to compute its identifier) may take, and how often
# the subscribed lists are read again.
MARKETPLACE_IMAGELIST_MAX_BYTES = env_int("MARKETPLACE_IMAGELIST_MAX_BYTES", 4 * 1024 * 1024, minimum=1024)
MARKETPLACE_IMAGELIST_IO_TIMEOUT = env_int("MARKETPLACE_IMAGELIST_IO_TIMEOUT", 30, minimum=1)
MARKETPLACE_IMAGELIST_DEADLINE = env_int("MARKETPLACE_IMAGELIST_DEADLINE", 300, minimum=1)
MARKETPLACE_IMAGELIST_IMAGE_DEADLINE = env_int("MARKETPLACE_IMAGELIST_IMAGE_DEADLINE", 3600, minimum=1)
MARKETPLACE_IMAGELIST_REFRESH_SECONDS = env_int("MARKETPLACE_IMAGELIST_REFRESH_SECONDS", 3600, minimum=60)
CELERY_BEAT_SCHEDULE["marketplace.imagelists_refresh"] = {
    "task": "marketplace.imagelists_refresh",
    "schedule": float(MARKETPLACE_IMAGELIST_REFRESH_SECONDS),
}
# Images that turned denied are announced after the commit that found it; this catches any a crash left behind.
CELERY_BEAT_SCHEDULE["marketplace.trust_changes_deliver"] = {
    "task": "marketplace.trust_changes_deliver",
    "schedule": 60.0,
}

# Image cache (DESIGN.md §5): verified, uncompressed copies of Marketplace images, one per identifier, that VM
# root disks are overlays on. Downloads stop at IMAGE_DOWNLOAD_TIMEOUT seconds overall (a claim older than that is
# taken over by the next worker) and at IMAGE_DOWNLOAD_IO_TIMEOUT seconds of silence (connect or read); the
# proxy variables of the environment (HTTP_PROXY, …) are used only when IMAGE_DOWNLOAD_TRUST_ENV says so.
IMAGE_CACHE_DIR = env_path("IMAGE_CACHE_DIR", VAR_DIR / "image-cache")
IMAGE_DOWNLOAD_TIMEOUT = env_int("IMAGE_DOWNLOAD_TIMEOUT", 3600, minimum=1)
IMAGE_DOWNLOAD_IO_TIMEOUT = env_int("IMAGE_DOWNLOAD_IO_TIMEOUT", 30, minimum=1)
IMAGE_DOWNLOAD_TRUST_ENV = env_bool("IMAGE_DOWNLOAD_TRUST_ENV", False)

# Volumes (DESIGN §5): the backends a site offers (``file``: qcow2/raw files in STORAGE_FILE_DIR, in production an
# NFS export mounted at the same path on every host; ``iscsi``: one tgt target per volume, its LUN backed by a raw
# file in ISCSI_DIR), which one new volumes get, the largest volume, and how often tgt's targets are compared with
# the database (a restarted tgtd has forgotten them all).
STORAGE_BACKENDS = env_list("STORAGE_BACKENDS", ["file"])
if not STORAGE_BACKENDS or any(b not in ("file", "iscsi") for b in STORAGE_BACKENDS):
    raise ImproperlyConfigured(f"STORAGE_BACKENDS must list file and/or iscsi, got {','.join(STORAGE_BACKENDS)!r}")
STORAGE_DEFAULT_BACKEND = env_str("STORAGE_DEFAULT_BACKEND", STORAGE_BACKENDS[0]).strip().lower()
if STORAGE_DEFAULT_BACKEND not in STORAGE_BACKENDS:
    raise ImproperlyConfigured(f"STORAGE_DEFAULT_BACKEND must be in STORAGE_BACKENDS, not {STORAGE_DEFAULT_BACKEND!r}")
STORAGE_FILE_DIR = env_path("STORAGE_FILE_DIR", VAR_DIR / "volumes")
STORAGE_FILE_FORMAT = env_str("STORAGE_FILE_FORMAT", "qcow2").strip().lower()
if STORAGE_FILE_FORMAT not in ("qcow2", "raw"):
    raise ImproperlyConfigured(f"STORAGE_FILE_FORMAT must be qcow2 or raw, not {STORAGE_FILE_FORMAT!r}")
STORAGE_VOLUME_MAX_GIB = env_int("STORAGE_VOLUME_MAX_GIB", 2048, minimum=1)
STORAGE_RECONCILE_SECONDS = env_int("STORAGE_RECONCILE_SECONDS", 60, minimum=10)
# A volume left creating or deleting longer than this has its task sent again (its message was lost).
STORAGE_STUCK_MINUTES = env_int("STORAGE_STUCK_MINUTES", 15, minimum=1)
# The Celery queue of the storage tasks: a worker that sees STORAGE_FILE_DIR and, with iSCSI, runs next to tgtd
# (tgtadm talks to the local tgtd only). "default" when one machine does it all.
STORAGE_QUEUE = env_str("STORAGE_QUEUE", "default").strip()
CELERY_BEAT_SCHEDULE["storage.reconcile"] = {
    "task": "storage.reconcile",
    "schedule": float(STORAGE_RECONCILE_SECONDS),
    "options": {"queue": STORAGE_QUEUE},
}
# iSCSI (tgt): backing files, the portal initiators are told, the naming authority of the IQNs
# (iqn.<yyyy-mm>.<ISCSI_IQN_DOMAIN>:<volume uuid>), tgtd's control port (tgtadm -C; 0: tgt's default), which
# initiator addresses a target accepts (ALL, or a comma-separated list of addresses/subnets), and CHAP: with
# ISCSI_CHAP each target gets its own generated user and secret.
ISCSI_DIR = env_path("ISCSI_DIR", VAR_DIR / "iscsi")
ISCSI_PORTAL = env_str("ISCSI_PORTAL", "127.0.0.1:3260").strip()
if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}", ISCSI_PORTAL):
    raise ImproperlyConfigured(f"ISCSI_PORTAL must be host:port, got {ISCSI_PORTAL!r}")
_site_host = urlsplit(SITE_URL).hostname or ""
_default_iqn_domain = (
    ".".join(reversed(_site_host.split(".")))
    if re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", _site_host) and not _site_host.replace(".", "").isdigit()
    else "localdomain.localhost"
)
ISCSI_IQN_DOMAIN = env_str("ISCSI_IQN_DOMAIN", _default_iqn_domain).strip().lower()
if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)*", ISCSI_IQN_DOMAIN):
    raise ImproperlyConfigured(f"ISCSI_IQN_DOMAIN must be a reversed domain (org.example), not {ISCSI_IQN_DOMAIN!r}")
ISCSI_CONTROL_PORT = env_int("ISCSI_CONTROL_PORT", 0, minimum=0)
ISCSI_INITIATORS = env_list("ISCSI_INITIATORS", ["ALL"])
if not ISCSI_INITIATORS or any(not re.fullmatch(r"ALL|[0-9A-Fa-f:.]+(/[0-9]{1,3})?", i) for i in ISCSI_INITIATORS):
    raise ImproperlyConfigured(f"ISCSI_INITIATORS must be ALL or addresses/subnets, got {','.join(ISCSI_INITIATORS)!r}")
ISCSI_CHAP = env_bool("ISCSI_CHAP", False)

# Cache (rate-limit counters): per process by default; a shared Redis when several web processes serve.
CACHE_URL = env_str("CACHE_URL", "")
if CACHE_URL and urlsplit(CACHE_URL).scheme not in {"redis", "rediss"}:
    raise ImproperlyConfigured(f"CACHE_URL must be redis:// or rediss://, got {CACHE_URL!r}")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
    if CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}

REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes unauthenticated calls answer 401, not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "knox.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "core.rest.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.rest.exception_handler",
    # Bodies are read up to DATA_UPLOAD_MAX_MEMORY_SIZE, and JSON nesting is bounded (core/rest.py).
    "DEFAULT_PARSER_CLASSES": [
        "core.rest.JSONParser",
        "core.rest.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # Anonymous endpoints that do work for strangers, per client address (core/throttling.py).
    "DEFAULT_THROTTLE_RATES": {
        "registration": env_str("THROTTLE_REGISTRATION", "20/hour"),
        "validate": env_str("THROTTLE_VALIDATE", "120/minute"),
        "password_reset": env_str("THROTTLE_PASSWORD_RESET", "5/hour"),
        # Reset mails to one account, whoever asks (answered like a sent mail when over).
        "password_reset_account": env_str("THROTTLE_PASSWORD_RESET_ACCOUNT", "3/hour"),
    },
    # Behind a reverse proxy, how many X-Forwarded-For hops to trust when telling clients apart; 0 trusts
    # none and uses REMOTE_ADDR (DRF's None would key on the raw header, which any client can vary).
    "NUM_PROXIES": env_int("NUM_PROXIES", 0, minimum=0),
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
# Login lockout (django-axes): after LOGIN_FAILURE_LIMIT failed logins for one username from one client
# address, that combination is refused (the lockout page, 429) for LOGIN_LOCKOUT_MINUTES after its latest
# failure; other users and other addresses are unaffected. Failures are kept in the database (the axes
# tables), so every web process sees them. The address is core.throttling's, the NUM_PROXIES rule.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_CLIENT_IP_CALLABLE = "core.throttling.login_client_address"
AXES_LOCKOUT_CALLABLE = "core.throttling.lockout_response"
AXES_RESET_ON_SUCCESS = True
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
# First in both cases, LDAP's backend or not: a locked-out login never reaches the directory.
AUTHENTICATION_BACKENDS = ["core.throttling.LoginLockoutBackend", *AUTHENTICATION_BACKENDS]

REST_KNOX = {
    "AUTH_HEADER_PREFIX": "Token",
    "TOKEN_TTL": None,  # each token carries its own expiry, chosen when it is created
    "AUTO_REFRESH": False,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Altostratus API",
    "DESCRIPTION": "Marketplace of signed image metadata, site policy, accounts, compute and storage.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI served from our own static files, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The entry status appears in several serializers; one name for it in the schema.
    "ENUM_NAME_OVERRIDES": {
        "EntryStatusEnum": [(v, v.capitalize()) for v in ("valid", "expired", "deprecated", "revoked")],
        "NetworkKindEnum": "compute.models.NetworkKind",
        "InstanceStateEnum": "compute.models.InstanceState",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # axes.apps announces its configuration at every start; failures and lockouts (axes.*) still log.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "axes.apps": {"level": "WARNING"}},
}
