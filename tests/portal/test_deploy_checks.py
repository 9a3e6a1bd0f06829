"""`manage.py check --deploy` is clean with production settings, and does flag the development defaults.

Each check runs `manage.py` in a fresh process with only the environment given here, since settings are read
from the environment once, at start-up.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ENTRA = {
    "ENTRA_TENANT_ID": "7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a",
    "ENTRA_CLIENT_ID": "9a8b7c6d-0000-4000-8000-00000000a001",
    "ENTRA_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token",
}
PRODUCTION = {
    **ENTRA,
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
    "PORTAL_ALLOWED_HOSTS": "portal.example.com",
    "PORTAL_URL": "https://portal.example.com",
    "PORTAL_SECURE_COOKIES": "true",
    "PORTAL_BEHIND_TLS_PROXY": "true",
    "DATABASE_URL": "postgres://portal@db.example.com:5432/portal",
    "REDIS_URL": "redis://redis.example.com:6379/0",
    "PORTAL_AUDIT_SIGNING_KEY": "https://kv-portal-audit.vault.azure.net/keys/audit-checkpoints",
}
# What `make run` (portal/devstack.py) sets: DEBUG off, but plain http on localhost, no HSTS, no DJANGO_SECRET_KEY.
DEVELOPMENT = {
    **ENTRA,
    "PORTAL_DEBUG": "0",
    "PORTAL_HSTS_SECONDS": "0",
    "PORTAL_SECURE_COOKIES": "0",
    "PORTAL_URL": "http://localhost:8000",
}


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Only PATH and HOME from outside: a developer's PORTAL_*/DJANGO_* variables must not change the verdict.
    base = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_every_deploy_check():
    result = check_deploy(PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_the_development_defaults_are_flagged():
    result = check_deploy(DEVELOPMENT)
    assert result.returncode != 0
    for check in (
        "security.W004",
        "security.W008",
        "security.W012",
        "security.W016",
        "portal.W001",
        "portal.W002",
    ):
        assert check in result.stderr, (check, result.stderr)


def test_production_without_https_or_with_debug_is_flagged():
    no_https = check_deploy({**PRODUCTION, "PORTAL_URL": "http://portal.example.com", "PORTAL_HSTS_SECONDS": "0"})
    assert "security.W008" in no_https.stderr and "security.W004" in no_https.stderr
    debug = check_deploy({**PRODUCTION, "PORTAL_DEBUG": "true"})
    assert debug.returncode != 0 and "security.W018" in debug.stderr


def test_a_malformed_audit_signing_key_url_is_an_error():
    result = check_deploy({**PRODUCTION, "PORTAL_AUDIT_SIGNING_KEY": "https://kv.vault.azure.net/secrets/x"})
    assert result.returncode != 0 and "portal.E004" in result.stderr


def test_a_local_audit_signing_key_is_flagged_for_production():
    result = check_deploy({**PRODUCTION, "PORTAL_AUDIT_SIGNING_KEY": "/keys/audit.pem"})
    assert result.returncode != 0 and "portal.W003" in result.stderr


def database_settings(env: dict[str, str]) -> str:
    base = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    code = "from django.conf import settings as s; d = s.DATABASES['default']; print(d['CONN_MAX_AGE'], "
    code += "d['CONN_HEALTH_CHECKS'])"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]  # after anything the start-up printed


def test_database_connections_are_kept_and_checked_before_reuse():
    assert database_settings(PRODUCTION) == "60 True"
    assert database_settings({**PRODUCTION, "PORTAL_DB_CONN_MAX_AGE_SECONDS": "0"}) == "0 True"
