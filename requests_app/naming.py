"""Names the portal derives and the input rules it enforces, before anything reaches a cloud call.

Pure functions: no database, no network. The rules copy the services' own (Kubernetes DNS-1123, Azure's
identity and FIC name patterns, ARM resource IDs) so a request that passes here is accepted there.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
IDENTITY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,127}$")
FIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,119}$")
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# ARM names: letters, digits and - _ . ( ) ; no path tricks. Providers and types: Namespace.Name / typeName.
_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.()-]{0,259}$")
_PROVIDER = re.compile(r"^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)+$")
_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")

# Namespace for role-assignment GUIDs: uuid5(this, scope|role|principal) is the same on every re-run.
ROLE_ASSIGNMENT_NAMESPACE = uuid.UUID("5f1d6c1e-6b0a-4c59-9d0e-2f5b8b7f1a10")


def label_error(value: str) -> str | None:
    """Why `value` is not a Kubernetes namespace name (DNS-1123 label), or None."""
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not DNS1123_LABEL.fullmatch(value):  # fullmatch: `$` would let a trailing newline through
        return "must consist of lower case letters, digits or '-', and start and end with a letter or digit"
    return None


def subdomain_error(value: str) -> str | None:
    """Why `value` is not a Kubernetes ServiceAccount name (DNS-1123 subdomain), or None."""
    if len(value) > 253:
        return "must be no more than 253 characters"
    if not DNS1123_SUBDOMAIN.fullmatch(value):
        return "must consist of lower case letters, digits, '-' or '.', and start and end with a letter or digit"
    return None


# Derived names: `<cluster>_<namespace>_<ServiceAccount>`, e.g. `aks-demo_team-payments_payments-api`.
# Kubernetes names never contain `_`, so the first two underscores are always the separators; the dots of a
# ServiceAccount name (a DNS subdomain) become `_` as well, which cannot collide either: everything after the
# second separator is the ServiceAccount, whose own underscores can only have been dots. Names that do not fit
# (too long, or a cluster name that is not a DNS label) become a readable prefix plus `__` and a hash of the whole
# triple: a joined name never holds `__` (no part is empty), so the two shapes never meet.
SEPARATOR = "_"
HASH_MARK = "__"
# 32 hex digits: 128 bits of SHA-256. Two triples share a hashed name only if SHA-256 collides on its first 128
# bits, which nobody has ever found: injective in practice, not in principle.
HASH_HEX = 32


def _joined(cluster: str, namespace: str, service_account: str) -> str | None:
    """`<cluster>_<namespace>_<sa, dots as _>` when all three are Kubernetes-style names, else None."""
    if label_error(cluster) or label_error(namespace) or subdomain_error(service_account):
        return None
    return SEPARATOR.join((cluster, namespace, service_account.replace(".", SEPARATOR)))


def _derived(cluster: str, namespace: str, service_account: str, limit: int) -> str:
    """The joined name when it fits `limit`; otherwise a readable prefix, `__` and a hash of the exact triple."""
    joined = _joined(cluster, namespace, service_account)
    if joined is not None and len(joined) <= limit:
        return joined
    # JSON of the list: an unambiguous encoding of the triple, whatever characters a cluster name holds.
    triple = json.dumps([cluster, namespace, service_account])
    digest = hashlib.sha256(triple.encode()).hexdigest()[:HASH_HEX]
    readable = re.sub(r"[^a-z0-9_-]", "-", (joined or SEPARATOR.join((cluster, namespace, service_account))).lower())
    # Lower case: ARM names ignore case. The prefix starts and ends with a letter or digit (Azure's first-character
    # rule, and no `_` next to the hash mark).
    prefix = readable[: limit - len(HASH_MARK) - HASH_HEX].strip("_-") or "id"
    return f"{prefix}{HASH_MARK}{digest}"


def identity_name(cluster: str, namespace: str, service_account: str) -> str:
    """The managed identity's name for a new request (Azure: 3–128 characters, IDENTITY_NAME)."""
    return _derived(cluster, namespace, service_account, 128)


def fic_name(cluster: str, namespace: str, service_account: str) -> str:
    """The federated credential's name for a new request (Azure: 3–120 characters, FIC_NAME)."""
    return _derived(cluster, namespace, service_account, 120)


# ---- the names of requests made before 0009 -----------------------------------------------------------------
# `<cluster>-<namespace>-<sa>` was not injective (`team`/`payments-api` and `team-payments`/`api` meet). Requests
# made then keep their names (their identities and credentials exist in Azure under them): both are stored on
# the request, and migration 0009 fills the credential's name from `legacy_fic_name`. Never change these two.


def _legacy_bounded(raw: str, limit: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", raw)
    if safe == raw and len(safe) <= limit:
        return safe
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{safe[: limit - 9].rstrip('-_')}-{digest}"


def legacy_identity_name(cluster: str, namespace: str, service_account: str) -> str:
    return _legacy_bounded(f"{cluster}-{namespace}-{service_account}", 128)


def legacy_fic_name(cluster: str, namespace: str, service_account: str) -> str:
    return _legacy_bounded(f"{cluster}-{namespace}-{service_account}", 120)


def role_assignment_name(scope: str, role_definition_id: str, principal_id: str) -> str:
    """A deterministic GUID: a re-run PUTs the same assignment; a new principal gets a new one."""
    key = f"{scope.lower()}|{role_definition_id.lower()}|{principal_id.lower()}"
    return str(uuid.uuid5(ROLE_ASSIGNMENT_NAMESPACE, key))


def scope_error(scope: str) -> str | None:
    """Why `scope` is not a well-formed ARM resource ID we would grant on, or None.

    Accepted: /subscriptions/{guid}[/resourceGroups/{name}[/providers/{Ns.Name}/{type}/{name}[/{type}/{name}]…]]
    Refused: anything else, including `..`, `%`, `//`, a trailing `/`, spaces and non-ASCII look-alikes.
    """
    if not scope.isascii() or any(c.isspace() for c in scope) or "%" in scope:
        return "must be a plain ARM resource ID (ASCII, no spaces or percent-encoding)"
    if not scope.startswith("/") or scope.endswith("/") or "//" in scope:
        return "must start with /subscriptions/ and have no empty or trailing segments"
    parts = scope[1:].split("/")
    if len(parts) < 2 or parts[0].lower() != "subscriptions" or not GUID.match(parts[1]):
        return "must start with /subscriptions/<subscription GUID>"
    rest = parts[2:]
    if rest and rest[0].lower() == "resourcegroups":
        if len(rest) < 2 or not _ARM_NAME.match(rest[1]) or rest[1].endswith("."):
            return "has an invalid resource group name"
        rest = rest[2:]
    if not rest:
        return None
    if rest[0].lower() != "providers" or len(rest) < 4 or not _PROVIDER.match(rest[1]):
        return "must name a resource as /providers/<Namespace>/<type>/<name>"
    pairs = rest[2:]
    if len(pairs) % 2:
        return "must end with a resource name"
    for type_, name in zip(pairs[::2], pairs[1::2], strict=True):
        if type_.lower() == "providers" or not _TYPE.match(type_) or not _ARM_NAME.match(name) or name in (".", ".."):
            return "has an invalid resource type or name"
    return None


def scope_matches(scope: str, pattern: str) -> bool:
    """Whether `scope` fits `pattern`, segment by segment; `*` stands for one segment (ARM ids ignore case)."""
    got, want = scope.strip("/").split("/"), pattern.strip("/").split("/")
    if len(got) != len(want):
        return False
    for g, w in zip(got, want, strict=True):
        if w == "*":
            continue
        if "*" in w:
            if not re.fullmatch(re.escape(w).replace(r"\*", "[^/]*"), g, re.IGNORECASE):
                return False
        elif g.lower() != w.lower():
            return False
    return True


def subscription_of(scope: str) -> str:
    return scope.split("/")[2].lower()
