"""What Entra group memberships and app roles mean in the portal: approver, admin.

Group IDs come from PORTAL_APPROVER_GROUPS / PORTAL_ADMIN_GROUPS (object IDs, compared case-insensitively);
app roles from PORTAL_APPROVER_ROLES / PORTAL_ADMIN_ROLES (role values, compared exactly as Entra issues them).
DevOps membership is per cluster (Cluster.devops_group_id) and is asked of User.in_group, not decided here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from ..models import User


@dataclass(frozen=True)
class PortalRoles:
    is_approver: bool
    is_portal_admin: bool


def _any_group(groups: set[str], configured: Iterable[str]) -> bool:
    return any(g.lower() in groups for g in configured if g)


def portal_roles(groups: Iterable[str], app_roles: Iterable[str]) -> PortalRoles:
    """The portal roles a person with these groups and app roles holds."""
    group_set = {g.lower() for g in groups}
    role_set = set(app_roles)
    return PortalRoles(
        is_approver=_any_group(group_set, settings.PORTAL_APPROVER_GROUPS)
        or bool(role_set & set(settings.PORTAL_APPROVER_ROLES)),
        is_portal_admin=_any_group(group_set, settings.PORTAL_ADMIN_GROUPS)
        or bool(role_set & set(settings.PORTAL_ADMIN_ROLES)),
    )


def assign(user: User, groups: Iterable[str], app_roles: Iterable[str], *, checked_at: datetime) -> PortalRoles:
    """Set `user`'s groups, app roles and portal flags from what Entra said at `checked_at` (not saved)."""
    groups, app_roles = list(groups), list(app_roles)
    roles = portal_roles(groups, app_roles)
    user.entra_groups = groups
    user.entra_roles = app_roles
    user.is_approver = roles.is_approver
    user.is_portal_admin = roles.is_portal_admin
    # Admins manage clusters in the Django admin, which needs is_staff (and all model permissions).
    user.is_staff = user.is_superuser = roles.is_portal_admin
    user.roles_checked_at = checked_at
    return roles
