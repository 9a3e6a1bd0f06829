"""The scope picker: the real Azure resources a catalogue role may be granted on, for the request form.

A role's scope patterns (`/subscriptions/*/resourceGroups/rg-team-*/providers/Microsoft.KeyVault/vaults/*`) say
what kind of scope it takes; Azure Resource Manager lists what exists of that kind in the cluster's allowed
subscriptions; the same matcher the form validates with (naming.scope_matches, policy.scope_allowed) keeps only
what the form would accept. A listing is cached briefly per cluster and role, so choosing roles and typing do
not call Azure each time. Suggestions only: the requester can always type an ID, and the form checks it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

from django.core.cache import cache
from redis.exceptions import RedisError

from . import naming, policy
from .cloud import resources
from .cloud.errors import CloudError
from .models import AllowedRole, Cluster

log = logging.getLogger(__name__)

CACHE_SECONDS = 60
COULD_NOT_LIST = "Could not list resources from Azure just now: type the resource ID."


@dataclass(frozen=True)
class Choice:
    """One scope to offer: the ARM ID and what a person recognises it by."""

    scope: str
    label: str


@dataclass(frozen=True)
class Listing:
    choices: list[Choice]
    error: str = ""  # for people; "" when the listing worked


def subscriptions_of(cluster: Cluster) -> list[str]:
    """The subscriptions a cluster's grants may lie in (blank list: the cluster's own)."""
    return list(cluster.allowed_subscriptions or [cluster.subscription_id])


def choices_for(cluster: Cluster, role: AllowedRole) -> Listing:
    """What `role` may be granted on for `cluster`, from the cache or from ARM. Never raises: a failure is a
    Listing with no choices and a message (not cached, so the next look tries again)."""
    key = _cache_key(cluster, role)
    cached = _cached(key)
    if cached is not None:
        return Listing([Choice(**c) for c in cached])
    try:
        choices = list_choices(subscriptions_of(cluster), list(role.scope_patterns), cluster)
    except CloudError as e:
        log.warning("scope picker: listing for %s/%s failed: %s", cluster.name, role.role_name, e.message)
        return Listing([], COULD_NOT_LIST)
    try:
        cache.set(key, [c.__dict__ for c in choices], CACHE_SECONDS)
    except (RedisError, OSError):  # the cache is down: the listing still answers, uncached
        log.exception("scope picker: listing not cached")
    return Listing(choices)


def _cached(key: str) -> list[dict[str, str]] | None:
    try:
        return cache.get(key)
    except (RedisError, OSError):
        log.exception("scope picker: cache not read")
        return None


def _cache_key(cluster: Cluster, role: AllowedRole) -> str:
    # The patterns and subscriptions are part of the key: an edited catalogue entry is listed afresh.
    what = json.dumps([subscriptions_of(cluster), role.scope_patterns], sort_keys=True)
    digest = hashlib.sha256(what.encode()).hexdigest()[:16]
    return f"scope-picker:{cluster.pk}:{role.pk}:{digest}"


def list_choices(subscriptions: list[str], patterns: list[str], cluster: Cluster) -> list[Choice]:
    """Every existing scope that fits one of `patterns` in one of `subscriptions` (CloudError from ARM)."""
    found: dict[str, Choice] = {}
    for pattern in patterns:
        parts = pattern.strip("/").split("/")
        for sub in subscriptions:
            if len(parts) < 2 or not naming.scope_matches(f"/subscriptions/{sub}", "/".join(parts[:2])):
                continue
            for choice in _candidates(sub, parts):
                if _acceptable(choice.scope, pattern, cluster):
                    found.setdefault(choice.scope.lower(), choice)
    return sorted(found.values(), key=lambda c: c.label.lower())


def _candidates(subscription: str, parts: list[str]) -> list[Choice]:
    """What exists in `subscription` of the kind of scope the pattern (split in `parts`) names."""
    if len(parts) == 2:
        return [Choice(f"/subscriptions/{subscription}", f"Subscription {subscription}")]
    if len(parts) == 4 and parts[2].lower() == "resourcegroups":
        return [Choice(g.id, f"{g.name} (resource group)") for g in resources.list_resource_groups(subscription)]
    if len(parts) == 8 and parts[4].lower() == "providers":
        # A type with a wildcard cannot be filtered on: list everything and let the pattern choose.
        resource_type = "" if "*" in parts[5] + parts[6] else f"{parts[5]}/{parts[6]}"
        return [
            Choice(r.id, f"{r.name} ({r.resource_group})")
            for r in resources.list_resources(subscription, resource_type)
        ]
    # Child resources (a vault's secrets) are not in ARM's resource list: those are typed.
    return []


def _acceptable(scope: str, pattern: str, cluster: Cluster) -> bool:
    """Whether the form would accept `scope` for this pattern: the picker never offers what validation refuses."""
    return (
        naming.scope_error(scope) is None
        and naming.scope_matches(scope, pattern)
        and policy.scope_allowed(cluster, scope)
    )
