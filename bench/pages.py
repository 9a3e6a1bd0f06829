"""What the pages of issue 10 cost at the size of real use, and whether their query counts stay flat as data grows.

A scratch PostgreSQL database (on BENCH_DATABASE_ADMIN_URL's server, default postgres://postgres@127.0.0.1:5432/
postgres; created, migrated, dropped) is filled in two stages: first --small requests, then up to --large, over
three clusters, 2,000 people and every status (60 % ready, one or two role grants each). After each stage every
page below is fetched --rounds times through Django's test client in this process with production settings (DEBUG
off), as the person who would look at it, after three warm-up fetches; it prints p50/p95 and the query count of
each page at both sizes, next to a reference from the same run: the sign-in page, which reads no table.

Usage: python bench/pages.py [--small 1000] [--large 20000] [--rounds 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._stack import admin_url, drop_database, scratch_database  # noqa: E402

DEVOPS = "0f1e2d3c-0003-4000-8000-000000000003"
TEAM = "0f1e2d3c-0004-4000-8000-000000000004"
SUB = "3f6a1c2e-8d4b-4e5f-9a0b-1c2d3e4f5a6b"
VAULT = f"/subscriptions/{SUB}/resourceGroups/rg-team-payments/providers/Microsoft.KeyVault/vaults/kv-payments-demo"
STORAGE = f"/subscriptions/{SUB}/resourceGroups/rg-team-payments/providers/Microsoft.Storage/storageAccounts/stpay"
STATUSES = ["ready"] * 12 + ["revoked"] * 3 + ["rejected", "cancelled", "failed", "submitted", "provisioning"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", type=int, default=1_000)
    p.add_argument("--large", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=50)
    args = p.parse_args()
    admin = admin_url()
    url = scratch_database(admin, prefix="bench_pages")
    try:
        return run(url, args)
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(admin, url)


def run(url: str, args: argparse.Namespace) -> int:
    os.environ.update(
        {
            "DATABASE_URL": url,
            "ENTRA_TENANT_ID": "7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a",
            "ENTRA_CLIENT_ID": "9a8b7c6d-0000-4000-8000-00000000a001",
            "ENTRA_CLIENT_SECRET": "bench",
            "PORTAL_DEBUG": "0",
            "PORTAL_SECURE_COOKIES": "0",
            "PORTAL_ROLES_MAX_AGE_SECONDS": "86400",
            "PORTAL_LOG_LEVEL": "ERROR",
            "DJANGO_SETTINGS_MODULE": "portal.settings",
        }
    )
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0, interactive=False)
    world = seed_people_and_clusters()
    rows: dict[str, dict[str, Any]] = {}
    for label, size in (("small", args.small), ("large", args.large)):
        t0 = time.perf_counter()
        fill(world, size)
        fill_s = time.perf_counter() - t0
        for name, result in measure(world, args.rounds).items():
            rows.setdefault(name, {})[label] = result
        print(f"filled to {size:,} requests in {fill_s:.1f} s", file=sys.stderr)
    print(f"\n{args.small:,} → {args.large:,} requests (60 % ready), PostgreSQL, {args.rounds} fetches per page\n")
    print("| page (who) | p50 ms | p95 ms | queries | at " + f"{args.small:,}: p50 ms | queries |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        big, small = r["large"], r["small"]
        print(
            f"| {name} | {big['p50']:.1f} | {big['p95']:.1f} | {big['queries']} | {small['p50']:.1f} | "
            f"{small['queries']} |"
        )
    return 0


def seed_people_and_clusters() -> dict[str, Any]:
    from django.utils import timezone

    from requests_app.models import AllowedRole, Cluster, User

    now = timezone.now()
    clusters = []
    for i, name in enumerate(["aks-demo", "aks-prod-weu", "aks-prod-neu"]):
        c = Cluster.objects.create(
            name=name,
            subscription_id=SUB,
            resource_group=f"rg-{name}-identities",
            location="westeurope",
            oidc_issuer_url=f"https://oidc.example/{name}/",
            api_server_url=f"https://{name}.example:443",
            devops_group_id=DEVOPS if i == 0 else str(uuid.uuid4()),
            devops_group_name=f"{name}-devops",
            allowed_namespaces=["team-payments", "team-search", "team-orders"],
            namespace_owners={ns: TEAM for ns in ["team-payments", "team-search", "team-orders"]},
        )
        AllowedRole.objects.create(
            cluster=c,
            role_name="Key Vault Secrets User",
            role_definition_id="4633458b-17de-408a-b874-0445c86b69e6",
            scope_patterns=["/subscriptions/*/resourceGroups/*/providers/Microsoft.KeyVault/vaults/*"],
        )
        clusters.append(c)
    people = User.objects.bulk_create(
        [
            User(username=f"user{i}", display_name=f"Person {i}", email=f"user{i}@contoso.example", entra_groups=[TEAM])
            for i in range(2_000)
        ]
    )
    dana = User.objects.create(
        username="dana", display_name="Dana DevOps", entra_groups=[DEVOPS, TEAM], roles_checked_at=now
    )
    alex = User.objects.create(
        username="alex", display_name="Alex Admin", is_portal_admin=True, is_staff=True, roles_checked_at=now
    )
    return {"clusters": clusters, "people": people, "dana": dana, "alex": alex, "made": 0}


def fill(world: dict[str, Any], size: int) -> None:
    from django.utils import timezone

    from requests_app.models import IdentityRequest, RoleGrant, Step

    now = timezone.now()
    clusters, people = world["clusters"], world["people"]
    batch: list[IdentityRequest] = []
    for i in range(world["made"], size):
        cluster = clusters[i % 3]
        ns = ["team-payments", "team-search", "team-orders"][i % 7 % 3]
        status = STATUSES[i % len(STATUSES)]
        ready = status == "ready"
        batch.append(
            IdentityRequest(
                cluster=cluster,
                namespace=ns,
                service_account=f"app-{i}",
                purpose=f"Workload {i} reads its secrets",
                identity_name=f"{cluster.name}_{ns}_app-{i}",
                fic_name=f"{cluster.name}-{ns}-app-{i}",
                requester=people[i % len(people)],
                status=status,
                ready_at=now if ready else None,
                client_id=str(uuid.uuid4()) if ready else "",
                principal_id=str(uuid.uuid4()) if ready else "",
                tenant_id="7d2c6e1a-5b4f-4c3e-9a8d-1f2e3d4c5b6a" if ready else "",
                identity_resource_id=f"/subscriptions/{SUB}/resourceGroups/rg/providers/"
                f"Microsoft.ManagedIdentity/userAssignedIdentities/id-{i}"
                if ready
                else "",
            )
        )
    made = IdentityRequest.objects.bulk_create(batch, batch_size=2_000)
    grants = []
    for n, req in enumerate(made):
        grants.append(
            RoleGrant(request=req, role_name="Key Vault Secrets User", role_definition_id="4633", scope=VAULT)
        )
        if n % 2:
            grants.append(
                RoleGrant(request=req, role_name="Storage Blob Data Reader", role_definition_id="2a2b", scope=STORAGE)
            )
    RoleGrant.objects.bulk_create(grants, batch_size=5_000)
    if not world["made"]:
        # The request pages measured: a ready identity on Dana's cluster, with its five finished steps.
        target = next(r for r in made if r.status == "ready" and r.cluster_id == clusters[0].pk)
        Step.objects.bulk_create(
            [
                Step(
                    request=target,
                    name=name,
                    position=pos,
                    state="succeeded",
                    attempts=1,
                    started_at=now,
                    finished_at=now,
                )
                for pos, name in enumerate(["identity", "service_account", "fic", "roles", "verify"])
            ]
        )
        world["target"] = target
    world["made"] = size


def measure(world: dict[str, Any], rounds: int) -> dict[str, dict[str, Any]]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    dana, alex = Client(), Client()
    dana.force_login(world["dana"])
    alex.force_login(world["alex"])
    anonymous = Client()
    target = world["target"]
    pages = [
        ("reference: sign-in page (anonymous)", anonymous, "/login/"),
        ("identities, first page (Dana, DevOps)", dana, "/identities/"),
        ("identities, search `app-1` (Dana)", dana, "/identities/?q=app-1"),
        ("identities, namespace filter (Dana)", dana, "/identities/?namespace=team-search"),
        ("identities, page 20 (Dana)", dana, "/identities/?page=20"),
        ("identities, all clusters (Alex, admin)", alex, "/identities/"),
        ("home (Dana)", dana, "/"),
        ("ready request page with handoff (Dana)", dana, f"/requests/{target.pk}/"),
        ("live status poll (Dana)", dana, f"/requests/{target.pk}/status/"),
    ]
    status_path = f"/requests/{target.pk}/status/"
    tag = dana.get(status_path)["ETag"]
    pages.append(("live status poll, nothing changed: 304 (Dana)", dana, status_path, {"HTTP_IF_NONE_MATCH": tag}))
    out = {}
    for name, client, path, *extra in pages:
        headers = extra[0] if extra else {}
        expected = 304 if headers else 200
        for _ in range(3):
            resp = client.get(path, **headers)
            assert resp.status_code == expected, (path, resp.status_code)
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            client.get(path, **headers)
            times.append((time.perf_counter() - t0) * 1000)
        with CaptureQueriesContext(connection) as ctx:
            client.get(path, **headers)
        times.sort()
        out[name] = {
            "p50": statistics.median(times),
            "p95": times[max(0, round(len(times) * 0.95) - 1)],
            "queries": len(ctx.captured_queries),
        }
    return out


if __name__ == "__main__":
    sys.exit(main())
