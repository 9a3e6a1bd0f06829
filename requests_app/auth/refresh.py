"""Groups and app roles that follow Entra after sign-in.

A user's groups and app roles are read at sign-in and then again from Microsoft Graph (with the portal's own
app token, `cloud.graph`): when they are older than PORTAL_ROLES_MAX_AGE_SECONDS, and always right before a
privileged action (`middleware.RolesMiddleware` decides when). What changed is written to the user and
audited as `user.roles_changed`, in one transaction. An account deleted or disabled in Entra keeps nothing.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction

from .. import audit
from ..cloud import graph
from ..models import User
from . import clock
from .roles import assign


def is_stale(user: User, *, max_age: int | None = None) -> bool:
    """Whether `user`'s groups and roles were read `max_age` seconds ago or longer (default
    PORTAL_ROLES_MAX_AGE_SECONDS), or never."""
    checked = user.roles_checked_at
    seconds = settings.PORTAL_ROLES_MAX_AGE_SECONDS if max_age is None else max_age
    return checked is None or clock.now() - checked >= timedelta(seconds=seconds)


def refresh_roles(user: User, *, source_ip: str | None = None) -> bool:
    """Read `user`'s groups and app roles from Graph now and store them; False if the account is gone.

    Raises CloudError when Graph cannot say (the caller decides whether to go on with what is known).
    """
    if not user.object_id:
        return False  # not an Entra user: nothing in Entra vouches for it
    access = graph.user_access(user.object_id)
    apply_access(user, access, source_ip=source_ip)
    return access.active


@transaction.atomic
def apply_access(user: User, access: graph.UserAccess, *, source_ip: str | None = None) -> None:
    """Store what Entra said about `user` (on the row and the instance); audit it when anything changed."""
    # Locked, so two requests refreshing at once record one change, not two.
    row = User.objects.select_for_update().get(pk=user.pk)
    before = _snapshot(row)
    assign(row, access.groups, access.roles, checked_at=clock.now())
    row.save(update_fields=[*_FIELDS, "roles_checked_at"])
    for name in (*_FIELDS, "roles_checked_at"):
        setattr(user, name, getattr(row, name))
    after = _snapshot(row)
    if before == after:
        return
    reason = "refreshed" if access.active else ("account_disabled" if access.exists else "account_deleted")
    audit.record(
        "user.roles_changed",
        actor=user,
        source_ip=source_ip,
        details={
            "reason": reason,
            "before": {k: v for k, v in before.items() if k != "groups"},
            "after": {k: v for k, v in after.items() if k != "groups"},
            "groups_added": sorted(set(after["groups"]) - set(before["groups"])),
            "groups_removed": sorted(set(before["groups"]) - set(after["groups"])),
        },
    )


_FIELDS = ("entra_groups", "entra_roles", "is_approver", "is_portal_admin", "is_staff", "is_superuser")


def _snapshot(user: User) -> dict[str, object]:
    return {
        "groups": sorted(g.lower() for g in user.entra_groups),
        "roles": sorted(user.entra_roles),
        "is_approver": user.is_approver,
        "is_portal_admin": user.is_portal_admin,
    }
