"""Who may see and do what. Views and templates ask these; nothing else decides access."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from .models import Cluster, IdentityRequest, Status, User


def is_devops_member(user: User, cluster: Cluster) -> bool:
    return user.is_authenticated and user.in_group(cluster.devops_group_id)


def can_see_ids(user: User, req: IdentityRequest) -> bool:
    """Client/principal IDs, resource ID and YAML: the cluster's DevOps members and admins, once ready."""
    return req.status == Status.READY and (user.is_portal_admin or is_devops_member(user, req.cluster))


def can_view(user: User, req: IdentityRequest) -> bool:
    return (
        req.requester_id == user.pk or user.is_approver or user.is_portal_admin or is_devops_member(user, req.cluster)
    )


def visible_requests(user: User) -> QuerySet[IdentityRequest]:
    qs = IdentityRequest.objects.select_related("cluster", "requester")
    if user.is_approver or user.is_portal_admin:
        return qs
    devops_clusters = [c.pk for c in Cluster.objects.all() if is_devops_member(user, c)]
    return qs.filter(Q(requester=user) | Q(cluster__in=devops_clusters))


def can_decide(user: User, req: IdentityRequest) -> bool:
    return (user.is_approver or user.is_portal_admin) and req.requester_id != user.pk and req.status == Status.SUBMITTED


def can_cancel(user: User, req: IdentityRequest) -> bool:
    return req.requester_id == user.pk and req.status == Status.SUBMITTED


def can_retry(user: User, req: IdentityRequest) -> bool:
    if req.status != Status.FAILED:
        return False
    if req.failed_step.startswith("revoke_"):
        return user.is_portal_admin or is_devops_member(user, req.cluster)
    return req.requester_id == user.pk or user.is_portal_admin


def can_revoke(user: User, req: IdentityRequest) -> bool:
    return req.status == Status.READY and (user.is_portal_admin or is_devops_member(user, req.cluster))


def can_verify(user: User, req: IdentityRequest) -> bool:
    """Re-running the token-exchange check: whoever relies on the identity (requester, DevOps) and admins."""
    return req.status == Status.READY and (
        req.requester_id == user.pk or user.is_portal_admin or is_devops_member(user, req.cluster)
    )


def can_repair(user: User, req: IdentityRequest) -> bool:
    """Re-apply what was approved for a ready identity that drifted: the cluster's DevOps members and admins."""
    return req.status == Status.READY and (user.is_portal_admin or is_devops_member(user, req.cluster))
