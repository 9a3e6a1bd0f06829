"""Writing audit events. Call inside the transaction that makes the change being recorded."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from .models import AuditEvent, Cluster, IdentityRequest, User

SYSTEM = "system"


def client_ip(http_request: HttpRequest | None) -> str | None:
    """The caller's address as the web server saw it (proxy headers are trusted only via the deployment)."""
    if http_request is None:
        return None
    return http_request.META.get("REMOTE_ADDR") or None


def record(
    action: str,
    *,
    actor: User | None,
    request: IdentityRequest | None = None,
    cluster: Cluster | None = None,
    details: dict[str, Any] | None = None,
    source_ip: str | None = None,
) -> AuditEvent:
    """Append one event. `actor=None` means the system (a provisioning job)."""
    if cluster is None and request is not None:
        cluster = request.cluster
    return AuditEvent.objects.create(
        actor=actor,
        actor_name=str(actor) if actor else SYSTEM,
        action=action,
        request=request,
        cluster=cluster,
        details=details or {},
        source_ip=source_ip,
    )
