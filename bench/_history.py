"""What bench/pages.py and bench/load.py share (issue 13): years of history in a scratch PostgreSQL database, and the
portal served from it as in production.

`seed()` writes --requests identity requests and --events audit events with COPY (psycopg's `cursor.copy()`), shaped
as real use makes them: 2,000 people and the demo tenant's five, three clusters (aks-demo read from the emulator's
ARM as `load_clusters` does; two more alike), every status, role grants, steps for what was provisioned, approvals,
change and move requests, open drift findings; each request's events on its own audit chain (submitted, approved,
each step started and succeeded, ready, revoked...), sign-ins and the like on the portal chain, reconciles on the
clusters' chains, over three years. Every event's `seq`, `prev_hash` and `hash` are computed with the portal's own
`audit.event_hash`, and every chain has its head, so `manage.py verify_audit` passes on the seeded log.

`Stack` runs the rest, each its own process: the emulator (Graph for the role reads of admin pages, ARM/Entra/
Kubernetes for approvals' provisioning), gunicorn on deploy/gunicorn.conf.py with production settings (DEBUG off;
bench/_querycount.py adds the query count header) and a warm RQ worker as `make run` starts it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import _stack  # noqa: E402

TENANT = "7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a"
APPROVERS, ADMINS = "0f1e2d3c-0001-4000-8000-000000000001", "0f1e2d3c-0002-4000-8000-000000000002"
DEVOPS, PAYMENTS, SEARCH = (f"0f1e2d3c-000{n}-4000-8000-00000000000{n}" for n in (3, 4, 5))
SUB = "3f6a1c2e-8d4b-4e5f-9a0b-1c2d3e4f5a6b"
VAULT = f"/subscriptions/{SUB}/resourceGroups/rg-team-payments/providers/Microsoft.KeyVault/vaults/kv-payments-demo"
STORAGE = (
    f"/subscriptions/{SUB}/resourceGroups/rg-team-payments/providers/Microsoft.Storage/storageAccounts/stpaymentsdemo"
)
NAMESPACES = {"team-payments": PAYMENTS, "team-search": SEARCH}
# The demo tenant's people (emulator/demo.yaml): the ones who sign in to the benchmark's pages, so that their
# roles can be read again from the emulator's Graph as in production.
DEMO_PEOPLE = {
    "riley": ("11111111-1111-4111-8111-111111111111", "Riley Requester", [PAYMENTS]),
    "avery": ("22222222-2222-4222-8222-222222222222", "Avery Approver", [APPROVERS]),
    "dana": ("33333333-3333-4333-8333-333333333333", "Dana DevOps", [DEVOPS, PAYMENTS]),
    "alex": ("44444444-4444-4444-8444-444444444444", "Alex Admin", [ADMINS]),
}
YEARS = 3
# Out of 1,000 requests: every status, the in-flight ones rare, ~400 waiting at 100,000 (issue 13 saw 381).
MIX = {
    "ready": 450,
    "cancelled": 254,
    "rejected": 120,
    "revoked": 60,
    "failed": 60,
    "suspended": 40,
    "submitted": 4,
    "approved": 4,
    "provisioning": 4,
    "revoking": 4,
}
STEPS = ["identity", "service_account", "fic", "roles", "verify"]
REVOKE_STEPS = ["revoke_service_account", "revoke_roles", "revoke_fic", "revoke_identity"]
PROVISIONED = {"ready", "revoked", "revoking", "suspended"}


# ---- COPY ------------------------------------------------------------------------------------------------------


def copy_rows(cursor: Any, model: Any, rows: Iterable[dict[str, Any]]) -> int:
    """COPY `rows` (dicts by attname) into `model`'s table; a column not given gets its field's default, so the
    benchmark keeps up with new columns. The auto primary key is left to its sequence unless a row gives it."""
    from django.db.models import AutoField, BigAutoField, JSONField
    from psycopg.types.json import Jsonb

    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return 0
    fields = [
        f
        for f in model._meta.concrete_fields
        if not (isinstance(f, AutoField | BigAutoField) and f.attname not in first)
    ]
    defaults = {f.attname: (None if f.null and not f.has_default() else f.get_default()) for f in fields}
    json_cols = {f.attname for f in fields if isinstance(f, JSONField)}
    names = [f.attname for f in fields]
    columns = ", ".join(f'"{f.column}"' for f in fields)
    n = 0
    with cursor.copy(f'COPY "{model._meta.db_table}" ({columns}) FROM STDIN') as cp:
        for row in _chain(first, rows):
            values = []
            for name in names:
                v = row[name] if name in row else defaults[name]
                values.append(Jsonb(v) if name in json_cols and v is not None else v)
            cp.write_row(values)
            n += 1
    return n


def _chain(first: dict[str, Any], rest: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    yield first
    yield from rest


# ---- seeding ---------------------------------------------------------------------------------------------------


class Clock:
    """Times in the past YEARS years, in UTC (as audit.record stamps them)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        self.start = self.now - timedelta(days=365 * YEARS)


def seed(n_requests: int, n_events: int, *, rng_seed: int = 13, log: Any = print) -> dict[str, Any]:
    """Fill the (migrated, empty) database Django points at. Returns what the benchmarks look at."""
    from django.db import connection

    from requests_app import audit, clusters
    from requests_app.models import (
        AllowedRole,
        Approval,
        AuditChainHead,
        AuditEvent,
        ChangeGrant,
        ChangeRequest,
        Cluster,
        DriftFinding,
        IdentityRequest,
        MoveRequest,
        RoleGrant,
        Step,
        User,
    )

    rng = random.Random(rng_seed)
    clock = Clock()
    t0 = time.perf_counter()

    # Clusters: aks-demo as `load_clusters` registers it (its connection read from the emulator's ARM), two more
    # alike in other regions (their connections made up: nothing provisions there).
    [demo] = clusters.load_file(ROOT / "deploy" / "demo-clusters.yaml")
    cluster_list = [demo]
    for name, location in (("aks-prod-weu", "westeurope"), ("aks-prod-neu", "northeurope")):
        c = Cluster.objects.create(
            name=name,
            display_name=f"AKS production ({location})",
            subscription_id=SUB,
            resource_group=f"rg-{name}-identities",
            location=location,
            oidc_issuer_url=f"https://{location}.oic.prod-aks.azure.com/{TENANT}/{uuid.uuid4()}/",
            api_server_url=f"https://{name}.hcp.{location}.azmk8s.io:443",
            devops_group_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            devops_group_name=f"{name}-devops",
            allowed_namespaces=list(NAMESPACES),
            namespace_owners=NAMESPACES,
        )
        for role in demo.roles.all():
            AllowedRole.objects.create(
                cluster=c,
                role_name=role.role_name,
                role_definition_id=role.role_definition_id,
                scope_patterns=role.scope_patterns,
                grants_write=role.grants_write,
                permissions=role.permissions,
            )
        cluster_list.append(c)
    roles = {r.role_name: r.role_definition_id for r in demo.roles.all()}

    # People: 2,000 who asked for identities over the years, and the demo tenant's four who sign in here.
    people = User.objects.bulk_create(
        [
            User(
                username=f"person{i}@contoso.example",
                email=f"person{i}@contoso.example",
                display_name=f"Person {i}",
                tenant_id=TENANT,
                object_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                entra_groups=[rng.choice([PAYMENTS, SEARCH])],
                roles_checked_at=clock.now,
            )
            for i in range(2_000)
        ],
        batch_size=1000,
    )
    demo_people = {}
    for key, (oid, name, groups) in DEMO_PEOPLE.items():
        demo_people[key] = User.objects.create(
            username=f"{key}@contoso.example",
            email=f"{key}@contoso.example",
            display_name=name,
            tenant_id=TENANT,
            object_id=oid,
            entra_groups=groups,
            is_approver=key == "avery",
            is_portal_admin=key == "alex",
            is_staff=key == "alex",
            is_superuser=key == "alex",
            roles_checked_at=clock.now,
        )
    riley, avery, alex = demo_people["riley"], demo_people["avery"], demo_people["alex"]
    approvers = [avery, alex]
    log(f"  clusters and {len(people) + len(demo_people):,} people in {time.perf_counter() - t0:.1f} s")

    # Requests, oldest first; the in-flight ones are from the last 30 days.
    statuses = [s for s, w in MIX.items() for _ in range(w)]
    span = (clock.now - clock.start).total_seconds()
    reqs: list[dict[str, Any]] = []
    grants: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    approvals: list[dict[str, Any]] = []
    chains: list[list[dict[str, Any]]] = []  # one list of events per chain, in time order
    for i in range(n_requests):
        status = statuses[rng.randrange(len(statuses))]
        if status in ("submitted", "approved", "provisioning", "revoking"):
            created = clock.now - timedelta(seconds=rng.uniform(600, 30 * 86400))
        else:
            created = clock.start + timedelta(seconds=span * i / n_requests + rng.uniform(0, 3600))
        cluster = cluster_list[i % 3]
        ns = list(NAMESPACES)[(i // 3) % 2]
        sa = f"app-{i}"
        requester = riley if i % 50 == 0 else people[rng.randrange(len(people))]
        rid = uuid.UUID(int=rng.getrandbits(128), version=4)
        approver = approvers[i % 7 == 0]
        decided = created + timedelta(seconds=rng.uniform(300, 2 * 86400))
        provisioned = status in PROVISIONED or status in ("failed", "provisioning")
        ready_at = decided + timedelta(seconds=rng.uniform(1, 20)) if status in PROVISIONED else None
        name = f"{cluster.name}_{ns}_{sa}"
        row: dict[str, Any] = {
            "id": rid,
            "cluster_id": cluster.pk,
            "namespace": ns,
            "service_account": sa,
            "purpose": f"The {sa} workload in {ns} reads its secrets from the team's vault",
            "identity_name": name,
            "fic_name": f"{cluster.name}-{ns}-{sa}",
            "requester_id": requester.pk,
            "status": status,
            "created_at": created,
            "updated_at": ready_at or created,
            "owner_group_id": NAMESPACES[ns],
            "owner_group_name": ns,
        }
        if status not in ("submitted", "cancelled"):
            row.update(decided_by_id=approver.pk, decided_at=decided, decision_comment="Least privilege: fine.")
        if status in PROVISIONED:
            row.update(
                ready_at=ready_at,
                client_id=str(uuid.uuid4()),
                principal_id=str(uuid.uuid4()),
                tenant_id=TENANT,
                identity_resource_id=f"/subscriptions/{SUB}/resourceGroups/{cluster.resource_group}/providers/"
                f"Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
                expires_at=clock.now + timedelta(days=rng.uniform(1, 180)),
            )
        if status == "failed":
            row.update(failed_step="fic", failure_message="The federated credential was refused: 403 Forbidden")
        if status == "suspended":
            row.update(expires_at=clock.now - timedelta(days=rng.uniform(1, 13)), suspended_at=clock.now)
        if status in ("revoked", "revoking"):
            revoked = min(clock.now, ready_at + timedelta(days=rng.uniform(1, 400)))
            row.update(revoked_by_id=requester.pk, revoked_at=revoked, revoke_reason="The workload was retired.")
        reqs.append(row)
        grants.append(
            {
                "request_id": rid,
                "role_name": "Key Vault Secrets User",
                "role_definition_id": roles.get("Key Vault Secrets User", "4633458b-17de-408a-b874-0445c86b69e6"),
                "scope": VAULT,
            }
        )
        if i % 2:
            grants.append(
                {
                    "request_id": rid,
                    "role_name": "Storage Blob Data Reader",
                    "role_definition_id": roles.get("Storage Blob Data Reader", "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"),
                    "scope": STORAGE,
                }
            )
        if status not in ("submitted", "cancelled", "rejected"):
            approvals.append({"request_id": rid, "approver_id": approver.pk, "created_at": decided})
        chains.append(_request_events(rng, row, requester, approver, cluster, steps, provisioned))
    log(f"  {len(reqs):,} requests shaped in {time.perf_counter() - t0:.1f} s")

    # Change and move requests on a few ready identities (some waiting for approval), drift on a few more.
    ready = [r for r in reqs if r["status"] == "ready"]
    rng.shuffle(ready)
    changes, moves, drift = [], [], []
    n_changes = max(2, n_requests // 400)
    for k, r in enumerate(ready[:n_changes]):
        waiting = k % 10 == 0
        at = r["ready_at"] + (clock.now - r["ready_at"]) * rng.random()
        changes.append(
            {
                "request_id": r["id"],
                "requester_id": r["requester_id"],
                "status": "submitted" if waiting else "applied",
                "reason": "The workload now also reads blobs",
                "purpose_before": r["purpose"],
                "created_at": at,
                "applied_at": None if waiting else at + timedelta(hours=2),
            }
        )
    n_moves = max(2, n_requests // 2000)
    for k, r in enumerate(ready[n_changes : n_changes + n_moves]):
        waiting = k % 5 == 0
        src = next(c for c in cluster_list if c.pk == r["cluster_id"])
        dst = cluster_list[(cluster_list.index(src) + 1) % 3]
        moves.append(
            {
                "request_id": r["id"],
                "requester_id": r["requester_id"],
                "status": "submitted" if waiting else "applied",
                "reason": "The workload moves to the new cluster",
                "from_cluster_id": src.pk,
                "from_namespace": r["namespace"],
                "from_service_account": r["service_account"],
                "from_fic_name": r["fic_name"],
                "to_cluster_id": dst.pk,
                "to_namespace": r["namespace"],
                "to_service_account": r["service_account"] + "-moved",
                "to_fic_name": r["fic_name"] + "-moved",
                "created_at": clock.now - timedelta(days=rng.uniform(0, 20)),
            }
        )
    for r in ready[n_changes + n_moves : n_changes + n_moves + max(2, n_requests // 500)]:
        drift.append(
            {
                "request_id": r["id"],
                "kind": "role_missing",
                "key": f"Key Vault Secrets User@{VAULT}",
                "details": {"role": "Key Vault Secrets User", "scope": VAULT},
                "detected_at": clock.now - timedelta(hours=rng.uniform(1, 72)),
                "last_seen_at": clock.now - timedelta(minutes=30),
            }
        )

    # The portal's chain (sign-ins, role changes) and the clusters' chains (reconciles) take the rest of the budget.
    request_events = sum(len(c) for c in chains)
    rest = max(0, n_events - request_events)
    everyone = people + list(demo_people.values())
    portal_chain, cluster_chains = [], {c.pk: [] for c in cluster_list}
    for k in range(rest):
        at = clock.start + timedelta(seconds=span * k / max(rest, 1) + rng.uniform(0, 60))
        if k % 20 == 0:
            c = cluster_list[k % 3]
            cluster_chains[c.pk].append(
                _event(at, alex, "drift.reconcile_requested", None, c.pk, {"cluster": c.name}, "10.20.0.7")
            )
            continue
        who = everyone[rng.randrange(len(everyone))]
        action, details = (
            ("user.signed_in", {"first_sign_in": False})
            if k % 25
            else ("user.roles_changed", {"reason": "refreshed", "groups_added": [], "groups_removed": [PAYMENTS]})
        )
        portal_chain.append(_event(at, who, action, None, None, details, f"10.{k % 250}.{k % 199}.{k % 97 + 1}"))
    chains.append(portal_chain)
    chains += [events for events in cluster_chains.values() if events]
    log(f"  {request_events:,} request events + {rest:,} portal and cluster events shaped")

    # Hash every chain as audit.append does; then every event in time order (so ids grow with time, as in life).
    # Chains already begun (registering aks-demo audited `cluster.registered`) go on from their heads.
    existing = {h.key: h for h in AuditChainHead.objects.all()}
    heads = []
    all_events = []
    for events in chains:
        if not events:
            continue
        events.sort(key=lambda e: e["created_at"])
        key = _chain_key(events[0])
        head = existing.get(key)
        after, prev = (head.seq, head.hash) if head else (0, "")
        for seq, e in enumerate(events, after + 1):
            e["chain"], e["seq"], e["prev_hash"] = key, seq, prev
            e["hash"] = prev = audit.event_hash(SimpleNamespace(**e))
        if head:
            AuditChainHead.objects.filter(pk=head.pk).update(seq=after + len(events), hash=prev)
        else:
            heads.append({"key": key, "seq": len(events), "hash": prev})
        all_events += events
    all_events.sort(key=lambda e: e["created_at"])
    log(f"  {len(all_events):,} events hashed on {len(heads):,} chains in {time.perf_counter() - t0:.1f} s")

    with connection.cursor() as django_cursor:
        cur = django_cursor.cursor  # psycopg's own cursor, for COPY
        for model, rows in (
            (IdentityRequest, reqs),
            (RoleGrant, grants),
            (Step, steps),
            (Approval, approvals),
            (DriftFinding, drift),
            (MoveRequest, moves),
            (AuditChainHead, heads),
        ):
            t = time.perf_counter()
            n = copy_rows(cur, model, rows)
            log(f"  COPY {model.__name__}: {n:,} rows in {time.perf_counter() - t:.1f} s")
        made = ChangeRequest.objects.bulk_create([ChangeRequest(**c) for c in changes])
        ChangeGrant.objects.bulk_create(
            [
                ChangeGrant(
                    change=c,
                    action="add",
                    role_name="Storage Blob Data Reader",
                    role_definition_id=roles.get("Storage Blob Data Reader", "2a2b"),
                    scope=STORAGE,
                )
                for c in made
            ]
        )
        t = time.perf_counter()
        n = copy_rows(cur, AuditEvent, all_events)
        log(f"  COPY AuditEvent: {n:,} rows in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        cur.execute("ANALYZE")
        log(f"  ANALYZE in {time.perf_counter() - t:.1f} s")
    log(f"seeded in {time.perf_counter() - t0:.1f} s")

    ready_demo = [r for r in reqs if r["status"] == "ready" and r["cluster_id"] == demo.pk]
    mine = [r for r in ready_demo if r["requester_id"] == riley.pk]
    deep = clock.start + timedelta(days=10)
    return {
        "people": demo_people,
        "clusters": cluster_list,
        "request": (mine or ready_demo)[0],
        "revoked": next(r for r in reqs if r["status"] == "revoked"),
        "waiting": [r["id"] for r in reqs if r["status"] == "submitted" and r["cluster_id"] == demo.pk],
        "events": len(all_events),
        "requests": len(reqs),
        "deep_day": deep.date(),
    }


def _chain_key(event: dict[str, Any]) -> str:
    if event["request_id"]:
        return f"request:{event['request_id']}"
    if event["cluster_id"]:
        return f"cluster:{event['cluster_id']}"
    return "portal"


def _event(
    at: datetime, actor: Any, action: str, request_id: Any, cluster_id: int | None, details: dict[str, Any], ip: Any
) -> dict[str, Any]:
    return {
        "created_at": at,
        "actor_id": actor.pk if actor else None,
        "actor_name": str(actor) if actor else "system",
        "action": action,
        "request_id": str(request_id) if request_id else None,
        "cluster_id": cluster_id,
        # Round-tripped through JSON, as audit.record stores them, so the hash covers what the database returns.
        "details": json.loads(json.dumps(details)),
        "source_ip": ip,
    }


def _request_events(
    rng: random.Random,
    r: dict[str, Any],
    requester: Any,
    approver: Any,
    cluster: Any,
    steps: list[dict[str, Any]],
    provisioned: bool,
) -> list[dict[str, Any]]:
    """The events (and steps) the workflow writes for a request that ended in `r["status"]`."""
    rid, cid, status = r["id"], cluster.pk, r["status"]
    ip = f"10.1.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    at = r["created_at"]
    out = [_event(at, requester, "request.submitted", rid, cid, {"identity_name": r["identity_name"], "grants": 1}, ip)]
    if status == "cancelled":
        out.append(_event(at + timedelta(hours=1), requester, "request.cancelled", rid, cid, {}, ip))
        return out
    if status == "submitted":
        return out
    decided = r.get("decided_at") or at
    if status == "rejected":
        out.append(_event(decided, approver, "request.rejected", rid, cid, {"comment": "Too broad a scope"}, ip))
        return out
    out.append(_event(decided, approver, "request.approved", rid, cid, {"comment": "Least privilege: fine."}, ip))
    if status == "approved":
        return out
    t = decided + timedelta(seconds=0.05)
    out.append(_event(t, None, "provisioning.started", rid, cid, {}, None))
    names = STEPS[:3] if status in ("failed", "provisioning") else STEPS
    for pos, name in enumerate(names):
        start, end = t + timedelta(seconds=0.1 * pos + 0.01), t + timedelta(seconds=0.1 * pos + 0.08)
        out.append(_event(start, None, f"step.{name}.started", rid, cid, {"attempt": 1}, None))
        state = "succeeded"
        if name == "fic" and status == "failed":
            out.append(_event(end, None, "step.fic.failed", rid, cid, {"error": "403 Forbidden"}, None))
            state = "failed"
        elif name == "fic" and status == "provisioning":
            state = "running"
        else:
            detail = {"client_id": r.get("client_id", "")} if name == "identity" else {}
            out.append(_event(end, None, f"step.{name}.succeeded", rid, cid, detail, None))
        steps.append(
            {
                "request_id": rid,
                "name": name,
                "position": pos,
                "state": state,
                "attempts": 1,
                "started_at": start,
                "finished_at": end if state != "running" else None,
                "error": "403 Forbidden" if state == "failed" else "",
            }
        )
    if status in ("failed", "provisioning"):
        return out
    out.append(_event(r["ready_at"], None, "request.ready", rid, cid, {}, None))
    if status == "suspended":
        out.append(
            _event(
                r["expires_at"] - timedelta(days=30),
                None,
                "identity.expiry_reminder_sent",
                rid,
                cid,
                {"days": 30},
                None,
            )
        )
        out.append(_event(r["expires_at"], None, "identity.suspended", rid, cid, {}, None))
    if status in ("revoked", "revoking"):
        at = r["revoked_at"]
        out.append(_event(at, requester, "request.revoke_requested", rid, cid, {"reason": "retired"}, ip))
        if status == "revoked":
            for pos, name in enumerate(REVOKE_STEPS, start=len(STEPS)):
                s = at + timedelta(seconds=0.1 * pos)
                out.append(_event(s, None, f"step.{name}.started", rid, cid, {"attempt": 1}, None))
                out.append(_event(s + timedelta(seconds=0.05), None, f"step.{name}.succeeded", rid, cid, {}, None))
                steps.append(
                    {
                        "request_id": rid,
                        "name": name,
                        "position": pos,
                        "state": "succeeded",
                        "attempts": 1,
                        "started_at": s,
                        "finished_at": s + timedelta(seconds=0.05),
                    }
                )
            out.append(_event(at + timedelta(seconds=2), None, "request.revoked", rid, cid, {}, None))
    return out


# ---- the stack -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """Emulator, scratch database (seeded, or an existing one), scratch Redis DB, gunicorn, one RQ worker."""

    def __init__(self, *, redis_db: int, workers: int, database_url: str | None = None) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-pages-")
        tmp = Path(self.tmp.name)
        self.emu, emu_env = _stack.start_emulator(str(tmp / "emulator"), latency_ms=0)
        self.admin = _stack.admin_url()
        self.own_db = database_url is None
        self.db_url = database_url or _stack.scratch_database(self.admin, prefix="bench_history")
        (tmp / "metrics").mkdir()
        self.env = _stack.portal_env(
            emu_env,
            self.db_url,
            _stack.scratch_redis_url(redis_db),
            # What a deployment sets (deploy/kubernetes/base/configmap.yaml and web.yaml), for this host: the Entra
            # groups behind the roles, one shared secret key, DEBUG off, JSON logs, gunicorn's metrics directory.
            PORTAL_APPROVER_GROUPS=APPROVERS,
            PORTAL_ADMIN_GROUPS=ADMINS,
            DJANGO_SECRET_KEY="bench-" + hashlib.sha256(self.db_url.encode()).hexdigest(),
            PORTAL_DEBUG="0",
            PORTAL_LOG_FORMAT="json",
            PORTAL_LOG_LEVEL="WARNING",
            PORTAL_ALLOWED_HOSTS="127.0.0.1,localhost",
            PROMETHEUS_MULTIPROC_DIR=str(tmp / "metrics"),
            PORTAL_EXPORT_DIR=str(tmp / "exports"),
            # Plain http on localhost: cookies without the Secure flag, or the load client would not send them back.
            PORTAL_SECURE_COOKIES="0",
        )
        self.workers = workers
        self.procs: dict[str, subprocess.Popen] = {}

    def django(self, *, migrate: bool) -> None:
        os.environ.update(self.env)
        import django

        django.setup()
        if migrate:
            from django.core.management import call_command

            call_command("migrate", verbosity=0, interactive=False)
        elif not self.own_db:
            # A database kept by an earlier run names that run's emulator (its port is gone): point aks-demo at this
            # run's, or every approval in the run fails at its first Kubernetes call. Bench-only: the portal refuses
            # to move a cluster's API server under its identities (clusters.connection_changes).
            from requests_app import clusters
            from requests_app.models import Cluster

            demo = Cluster.objects.get(name="aks-demo")
            connection, _ = clusters.resolve_connection(
                {"arm_resource_id": demo.arm_resource_id, "api_auth": demo.api_auth}, cluster_name=demo.name
            )
            Cluster.objects.filter(pk=demo.pk).update(**connection)
        _stack.flush_redis()

    def start_web(self) -> str:
        port = free_port()
        bin_dir = Path(sys.executable).parent
        argv = [str(bin_dir / "gunicorn"), "_querycount:application", "--config", "deploy/gunicorn.conf.py"]
        argv += ["--pythonpath", "bench", "--bind", f"127.0.0.1:{port}", "--workers", str(self.workers)]
        self.procs["web"] = _stack.start(argv, self.env, Path(self.tmp.name) / "web.log")
        base = f"http://127.0.0.1:{port}"
        import requests

        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if requests.get(base + "/healthz", timeout=2).status_code == 200:
                    return base
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise SystemExit(f"gunicorn did not answer /healthz; see {self.tmp.name}/web.log")

    def start_worker(self) -> subprocess.Popen:
        [argv] = [v for k, v in _stack.devstack_processes(self.env).items() if k.startswith("worker")][:1]
        self.procs["worker"] = _stack.start(argv, self.env, Path(self.tmp.name) / "worker.log")
        _stack.wait_for_workers(1)
        return self.procs["worker"]

    def stop(self, *, keep: bool) -> None:
        _stack.stop(list(self.procs.values()))
        self.emu.terminate()
        self.emu.wait(10)
        from django.db import connections

        connections.close_all()
        try:
            _stack.flush_redis()
        except Exception as e:  # noqa: BLE001  (best effort)
            print(f"cleanup: {e}", file=sys.stderr)
        if keep or not self.own_db:
            print(f"\nthe seeded database is kept: DATABASE_URL={self.db_url}", file=sys.stderr)
        else:
            _stack.drop_database(self.admin, self.db_url)
        self.tmp.cleanup()


def session_for(user: Any) -> str:
    """A signed-in session for `user`, as the sign-in callback leaves it (django.contrib.auth.login + the portal's
    sign-in time); returns the session cookie's value."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from requests_app.auth.middleware import SIGNED_IN_AT

    s = SessionStore()
    s[SESSION_KEY] = str(user.pk)
    s[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    s[HASH_SESSION_KEY] = user.get_session_auth_hash()
    s[SIGNED_IN_AT] = time.time()
    s.create()
    return s.session_key


def cpu_reference_ms() -> float:
    """This machine's speed at plain Python, now: the best of three runs of a fixed loop (10 million additions), in
    ms. Printed beside a run's figures, so runs on machines of different speed (the same kind of machine varies
    two- to threefold here) can be told apart from changes of the code."""
    best = float("inf")
    for _ in range(3):
        t0, total = time.perf_counter(), 0
        for i in range(10_000_000):
            total += i
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def rss_mib(pid: int) -> tuple[float, float]:
    """A process's resident memory now and its peak so far (VmRSS, VmHWM), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    get = lambda key: int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M).group(1)) / 1024  # noqa: E731
    return get("VmRSS"), get("VmHWM")


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (gunicorn's arbiter and workers), in MiB."""
    import psutil

    p = psutil.Process(pid)
    return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20
