"""Who may see and do what. Views and templates ask these; nothing else decides access."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q, QuerySet

from .models import ChangeRequest, Cluster, IdentityRequest, Status, User


def is_devops_member(user: User, cluster: Cluster) -> bool:
    return user.is_authenticated and user.in_group(cluster.devops_group_id)


def owning_group(cluster: Cluster, namespace: str) -> str:
    """The object ID of the Entra group that owns `namespace` on `cluster` ("" when none does)."""
    return str((cluster.namespace_owners or {}).get(namespace, ""))


def in_owning_group(user: User, cluster: Cluster, namespace: str) -> bool:
    """Whether `user` is a member of the group that owns `namespace` (from their groups as last read)."""
    return user.is_authenticated and user.in_group(owning_group(cluster, namespace))


def can_request_in(user: User, cluster: Cluster, namespace: str) -> bool:
    """Identities in a namespace the cluster allows: members of its owning group, and admins."""
    if namespace not in cluster.allowed_namespaces:
        return False
    return user.is_portal_admin or in_owning_group(user, cluster, namespace)


@dataclass(frozen=True)
class Team:
    """What approvers see of a requester's team: the namespace's owning group, whether the requester is in it (as
    their groups were last read from Entra), and whether they asked as an admin instead."""

    group: str
    member: bool
    as_admin: bool


def team_of(req: IdentityRequest) -> Team:
    member = in_owning_group(req.requester, req.cluster, req.namespace)
    return Team(owning_group(req.cluster, req.namespace), member, not member and req.requester.is_portal_admin)


def requestable_namespaces(user: User, cluster: Cluster) -> list[str]:
    return [ns for ns in cluster.allowed_namespaces if can_request_in(user, cluster, ns)]


def can_see_ids(user: User, req: IdentityRequest) -> bool:
    """Client/principal IDs, resource ID and YAML: the cluster's DevOps members and admins, once ready."""
    return req.status == Status.READY and (user.is_portal_admin or is_devops_member(user, req.cluster))


def can_view(user: User, req: IdentityRequest) -> bool:
    return (
        req.requester_id == user.pk
        or user.is_approver
        or user.is_portal_admin
        or is_devops_member(user, req.cluster)
        or user.in_group(req.owner_group_id)  # issue 11 lifecycle: the owning team sees what it owns
    )


# issue 13 cheap: where the answer is kept on the user object. A page asks several times (the view, the navigation's
# links); a User object lives for one request (or job), and a change of groups asks again.
_DEVOPS_MEMO = "_portal_devops_cluster_ids"


def devops_cluster_ids(user: User) -> list[int]:
    """The clusters whose DevOps group `user` is in (their groups as last read): one query per request, whatever
    the count."""
    if not user.is_authenticated or not user.entra_groups:
        return []
    groups = frozenset(g.lower() for g in user.entra_groups)
    memo = getattr(user, _DEVOPS_MEMO, None)
    if memo is None or memo[0] != groups:
        pairs = Cluster.objects.values_list("pk", "devops_group_id")
        memo = (groups, [pk for pk, group in pairs if group and group.lower() in groups])
        setattr(user, _DEVOPS_MEMO, memo)
    return list(memo[1])


def devops_clusters(user: User) -> QuerySet[Cluster]:
    return Cluster.objects.filter(pk__in=devops_cluster_ids(user))


def identity_clusters(user: User) -> QuerySet[Cluster]:
    """The clusters whose ready identities `user` may list: every cluster for admins, their DevOps clusters else."""
    return Cluster.objects.all() if user.is_portal_admin else devops_clusters(user)


def can_list_identities(user: User) -> bool:
    """The identities page: admins, and whoever is a DevOps member of at least one cluster."""
    return user.is_authenticated and (user.is_portal_admin or bool(devops_cluster_ids(user)))


def listable_identities(user: User) -> QuerySet[IdentityRequest]:
    """Ready identities `user` may list (and open with their IDs): never another cluster's for a DevOps member."""
    qs = IdentityRequest.objects.filter(status=Status.READY)
    return qs if user.is_portal_admin else qs.filter(cluster__in=devops_cluster_ids(user))


def visible_requests(user: User) -> QuerySet[IdentityRequest]:
    qs = IdentityRequest.objects.select_related("cluster", "requester")
    if user.is_approver or user.is_portal_admin:
        return qs
    return qs.filter(Q(requester=user) | Q(cluster__in=devops_cluster_ids(user)))


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
    return req.status in (Status.READY, Status.SUSPENDED) and (
        user.is_portal_admin or is_devops_member(user, req.cluster)
    )


def can_verify(user: User, req: IdentityRequest) -> bool:
    """Re-running the token-exchange check: whoever relies on the identity (requester, DevOps) and admins."""
    return req.status == Status.READY and (
        req.requester_id == user.pk or user.is_portal_admin or is_devops_member(user, req.cluster)
    )


def can_repair(user: User, req: IdentityRequest) -> bool:
    """Re-apply what was approved for a ready identity that drifted: the cluster's DevOps members and admins."""
    return req.status == Status.READY and (user.is_portal_admin or is_devops_member(user, req.cluster))


# ---- issue 11: owners (lifecycle), changing what a ready identity may do (changes) -------------------------


def is_owner(user: User, req: IdentityRequest) -> bool:
    """Who may act as the identity's owner (re-confirm, resume, transfer): members of its owning group (their
    groups as last read), the requester while their account is active in Entra, and admins."""
    if not user.is_authenticated:
        return False
    if user.is_portal_admin:
        return True
    if req.requester_id == user.pk:
        # A requester Entra disabled or deleted is no owner, whatever groups were last read for them.
        return req.requester_left_at is None
    return user.in_group(req.owner_group_id)


def owned_identities(user: User) -> QuerySet[IdentityRequest]:
    """Ready and suspended identities `user` may see on the expiring page: theirs as owner (their team's, or
    asked for by them), their DevOps clusters', every one for admins."""
    qs = IdentityRequest.objects.filter(status__in=[Status.READY, Status.SUSPENDED])
    if user.is_portal_admin:
        return qs
    mine = Q(requester=user, requester_left_at__isnull=True) | Q(cluster__in=devops_cluster_ids(user))
    groups = [g for g in user.entra_groups if g]
    if groups:
        mine |= Q(owner_group_id__in=groups) | Q(owner_group_id__in=[g.lower() for g in groups])
    return qs.filter(mine)


def can_see_expiring(user: User) -> bool:
    """Whether the navigation links the expiring page (issue 11 lifecycle): admins, DevOps members of a cluster,
    and owners of a ready or suspended identity. A fixed few queries, whatever the number of clusters."""
    if not user.is_authenticated:
        return False
    return user.is_portal_admin or bool(devops_cluster_ids(user)) or owned_identities(user).exists()


def can_request_change(user: User, req: IdentityRequest) -> bool:
    """Asking to add or remove roles (or change the purpose) of a ready identity: its owners."""
    return req.status == Status.READY and is_owner(user, req)


def can_decide_change(user: User, change: ChangeRequest) -> bool:
    """Approving or rejecting a change: approvers and admins, never the person who asked for it."""
    return (
        (user.is_approver or user.is_portal_admin)
        and change.requester_id != user.pk
        and change.status == ChangeRequest.State.SUBMITTED
    )
