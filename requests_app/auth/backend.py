"""The Django authentication backend for Entra ID: a validated identity in, a refreshed portal User out.

There are no passwords: `authenticate()` only accepts an `entra_identity` that `entra.complete_sign_in`
produced. Users are keyed by (tenant ID, object ID); name, e-mail, groups, app roles and the portal flags are
rewritten at every sign-in; between sign-ins `refresh` reads groups and app roles again (README, "Roles and
team ownership").
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.db import transaction
from django.http import HttpRequest

from .. import audit
from ..models import User
from . import clock
from .entra import EntraIdentity
from .roles import assign


class EntraBackend(ModelBackend):
    """ModelBackend for sessions and permissions (the Django admin), Entra for authentication."""

    def authenticate(  # type: ignore[override]
        self, request: HttpRequest | None, entra_identity: EntraIdentity | None = None, **kwargs: Any
    ) -> User | None:
        if entra_identity is None:
            return None  # username/password and anything else: not ours, and not accepted
        return sign_in_user(entra_identity, source_ip=audit.client_ip(request))


@transaction.atomic
def sign_in_user(identity: EntraIdentity, *, source_ip: str | None) -> User | None:
    """Create or refresh the user for `identity` and record `user.signed_in`; None if the account is disabled
    in the portal (is_active off), which the caller records as a failed sign-in."""
    user, created = User.objects.select_for_update().get_or_create(
        tenant_id=identity.tenant_id, object_id=identity.object_id, defaults={"username": identity.object_id}
    )
    user.display_name = identity.name[:256]
    user.email = identity.email[:254]
    roles = assign(user, identity.groups, identity.roles, checked_at=clock.now())
    if created:
        user.set_unusable_password()  # only then: the password field feeds every session's auth hash
    user.save()
    if not user.is_active:
        return None
    audit.record(
        "user.signed_in",
        actor=user,
        details={
            "first_sign_in": created,
            "is_approver": roles.is_approver,
            "is_portal_admin": roles.is_portal_admin,
            "groups": len(identity.groups),
            "groups_from_graph": identity.groups_from_graph,
            "roles": list(identity.roles),
        },
        source_ip=source_ip,
    )
    return user
