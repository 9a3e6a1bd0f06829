"""Finding ready identities for the identities page: one search box over the fields people remember, and filters.

Who may list which identities is `access.listable_identities`; this only narrows and orders what that allows.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from django.db.models import Exists, OuterRef, QuerySet

from . import keyset
from . import search as text_search
from .models import AllowedRole, Cluster, IdentityRequest, RoleGrant, request_listed_at


def search(
    qs: QuerySet[IdentityRequest], *, cluster: int | None = None, namespace: str = "", role: str = ""
) -> QuerySet[IdentityRequest]:
    """`qs` narrowed to the filters; newest ready first. The search text is applied by `page`."""
    if cluster is not None:
        qs = qs.filter(cluster_id=cluster)
    if namespace:
        qs = qs.filter(namespace=namespace)
    if role:
        qs = qs.filter(Exists(RoleGrant.objects.filter(request=OuterRef("pk"), role_name=role)))
    return newest_first(qs).select_related("cluster", "requester").prefetch_related("grants")


def page(qs: QuerySet[IdentityRequest], text: str, cursor_text: str | None, size: int) -> keyset.Page:
    """The keyset page of `qs` (from `search`) at the cursor, narrowed to `text` (case-insensitive, anywhere in
    the identity's name, namespace, ServiceAccount, a granted role or scope, the requester's name or username).
    Raises keyset.BadCursor, and search.SearchError for a text too short to look up in the index."""
    # issue 13: a text is matched row by row over the newest rows first, then from the trigram indexes (search.py).
    fetch = partial(text_search.first_identities, text=text) if text else None
    return keyset.page(qs, cursor_text, size, key="listed_at", model=IdentityRequest, fetch=fetch)


def newest_first(qs: QuerySet[IdentityRequest]) -> QuerySet[IdentityRequest]:
    """Ready identities newest ready first, by (`listed_at`, id): the order the request_ready_* indexes hold, so
    a page reads its rows in index order and never sorts the cluster's thousands. `listed_at` is the keyset
    pager's key (requests_app/keyset.py)."""
    return qs.annotate(listed_at=request_listed_at()).order_by("-listed_at", "-id")


def namespaces(clusters: Iterable[Cluster]) -> list[str]:
    """The namespace filter's choices: what the clusters allow (a small, fixed set), not DISTINCT over requests."""
    return sorted({ns for c in clusters for ns in c.allowed_namespaces})


def role_names(clusters: Iterable[Cluster]) -> list[str]:
    """The role filter's choices: the clusters' catalogues, not DISTINCT over every grant ever made."""
    return sorted(set(AllowedRole.objects.filter(cluster__in=list(clusters)).values_list("role_name", flat=True)))
