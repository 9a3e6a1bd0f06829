"""System checks: missing cloud configuration is reported by `manage.py check`, not found at 3 a.m."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from .cloud import keyvault_keys


@register(Tags.security, deploy=True)
def check_secret_key(app_configs: Any, **kwargs: Any) -> list[Any]:
    if not os.environ.get("DJANGO_SECRET_KEY"):
        return [
            Warning(
                "DJANGO_SECRET_KEY is not set; a key generated for this checkout is used.",
                hint="Set DJANGO_SECRET_KEY to the same secret on every replica.",
                id="portal.W001",
            )
        ]
    return []


@register()
def check_entra(app_configs: Any, **kwargs: Any) -> list[Any]:
    errors = []
    if not settings.ENTRA_TENANT_ID or not settings.ENTRA_CLIENT_ID:
        errors.append(
            Error("Entra sign-in is not configured.", hint="Set ENTRA_TENANT_ID and ENTRA_CLIENT_ID.", id="portal.E001")
        )
    if not settings.ENTRA_CLIENT_SECRET and not settings.ENTRA_FEDERATED_TOKEN_FILE:
        errors.append(
            Error(
                "The portal's app has no credential.",
                hint="Set ENTRA_FEDERATED_TOKEN_FILE (workload identity) or ENTRA_CLIENT_SECRET.",
                id="portal.E002",
            )
        )
    if settings.PORTAL_CA_BUNDLE and not os.path.exists(settings.PORTAL_CA_BUNDLE):
        errors.append(Error(f"PORTAL_CA_BUNDLE {settings.PORTAL_CA_BUNDLE} does not exist.", id="portal.E003"))
    return errors


@register(Tags.security, deploy=True)
def check_audit_signing(app_configs: Any, **kwargs: Any) -> list[Any]:
    spec = settings.PORTAL_AUDIT_SIGNING_KEY
    if not spec:
        return [
            Warning(
                "PORTAL_AUDIT_SIGNING_KEY is not set: no audit checkpoints are signed, so a consistent rewrite of the "
                "audit log by someone with database access goes unseen.",
                hint="Set it to a Key Vault key URL (README: Tamper-evident audit).",
                id="portal.W002",
            )
        ]
    if not spec.startswith("https://"):
        return [
            Warning(
                "PORTAL_AUDIT_SIGNING_KEY is a key file: whoever can read it can sign audit checkpoints.",
                hint="Use a Key Vault key in production.",
                id="portal.W003",
            )
        ]
    return []


@register()
def check_audit_key_url(app_configs: Any, **kwargs: Any) -> list[Any]:
    spec = settings.PORTAL_AUDIT_SIGNING_KEY
    if not spec.startswith(("https://", "http://")):
        return []
    try:
        keyvault_keys.parse_key_url(spec)
    except ValueError as e:
        return [Error(f"PORTAL_AUDIT_SIGNING_KEY: {e}.", id="portal.E004")]
    return []
