"""What signed audit checkpoints cost: writing one, and verifying a large log against them.

For each database (a scratch SQLite file; and a scratch PostgreSQL database on DATABASE_URL's server when
DATABASE_URL is set, created here and dropped at the end) a child process migrates it, fills it with
--events audit events forming valid hash chains of --chain-length events each (one per request, as the portal
writes them), then measures:
  0. the first checkpoint, which lists every chain's head;
  1. writing a checkpoint signed with the local key (a PEM file), median of --rounds (no head moved: it reads
     every head and hashes them into the digest);
  2. writing a checkpoint signed by the emulator's Key Vault key (in-process emulator over HTTPS, the portal's
     credential, Key Vault Crypto User granted through ARM), median of --rounds after one warm-up;
  3. `manage.py verify_audit` over the whole log and its checkpoint file: events/s;
and, as reference figures from the same run: reading the same rows through the ORM without checking anything,
and hashing them in memory without reading them.

Usage: python bench/audit_checkpoints.py [--events 200000] [--chain-length 10] [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--chain-length", type=int, default=10)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--child", help=argparse.SUPPRESS)  # a database URL: measure there, print JSON
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.events, args.chain_length, args.rounds)))
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        results.append(("SQLite", child(f"sqlite:///{tmp}/bench.sqlite3", args)))
    pg = os.environ.get("DATABASE_URL", "")
    if pg.startswith("postgres"):
        url, drop = scratch_postgres(pg)
        try:
            results.append(("PostgreSQL", child(url, args)))
        finally:
            drop()
    chains = -(-args.events // args.chain_length)
    print(f"\n{args.events:,} audit events in {chains:,} chains, {args.rounds} rounds per checkpoint figure (median)\n")
    print("| figure | " + " | ".join(name for name, _ in results) + " |")
    print("|---|" + "---|" * len(results))
    rows = [
        ("the first checkpoint, every chain moved, local key (ms)", "first_ms", "{:.1f}"),
        ("write a checkpoint, local key (ms)", "local_ms", "{:.1f}"),
        ("write a checkpoint, emulator's Key Vault (ms)", "keyvault_ms", "{:.1f}"),
        ("verify_audit, chain + checkpoints (events/s)", "verify_eps", "{:,.0f}"),
        ("verify_audit wall time (s)", "verify_s", "{:.1f}"),
        ("reference: read the rows through the ORM only (events/s)", "read_eps", "{:,.0f}"),
        ("reference: hash the events in memory only (events/s)", "hash_eps", "{:,.0f}"),
        ("filling the log (s, not part of any figure)", "fill_s", "{:.1f}"),
    ]
    for label, key, fmt in rows:
        print(f"| {label} | " + " | ".join(fmt.format(r[key]) for _, r in results) + " |")
    return 0


def child(url: str, args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", url, "--events", str(args.events), "--rounds", str(args.rounds)]
        + ["--chain-length", str(args.chain_length)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"the measurement on {url} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def scratch_postgres(url: str) -> tuple[str, Any]:
    import psycopg

    parts = urlsplit(url)
    name = f"bench_audit_{uuid.uuid4().hex[:8]}"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urlunsplit(parts._replace(path=f"/{name}")), drop


# ---- the child: one database ------------------------------------------------------------------------------


def measure(url: str, events: int, chain_length: int, rounds: int) -> dict[str, Any]:
    from emulator import Emulator

    tmp = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    with Emulator(data_dir=tmp / "emulator") as emu:
        tenant, app = emu.config.tenants[0], emu.config.tenants[0].apps[0]
        os.environ.update(
            {
                "DATABASE_URL": url,
                "ENTRA_TENANT_ID": tenant.id,
                "ENTRA_CLIENT_ID": app.client_id,
                "ENTRA_CLIENT_SECRET": app.secrets[0],
                "ENTRA_AUTHORITY_HOST": emu.url,
                "ARM_BASE_URL": emu.url,
                "PORTAL_CA_BUNDLE": str(emu.tls.ca_bundle),
                "REQUESTS_CA_BUNDLE": str(emu.tls.ca_bundle),
                "PORTAL_AUDIT_SIGNING_KEY": str(tmp / "signing-key.pem"),
                "PORTAL_AUDIT_CHECKPOINT_FILE": str(tmp / "checkpoints.jsonl"),
                "PORTAL_LOG_LEVEL": "WARNING",
                "DJANGO_SETTINGS_MODULE": "portal.settings",
            }
        )
        import logging

        import django

        django.setup()
        logging.getLogger("audit.checkpoints").setLevel(logging.WARNING)  # keep stdout for the JSON result
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        started = time.monotonic()
        fill(events, chain_length)
        result: dict[str, Any] = {"fill_s": time.monotonic() - started}
        result["first_ms"] = checkpoint_ms(local_signer(), 1, warm=False)
        result["local_ms"] = checkpoint_ms(local_signer(), rounds, warm=False)
        result["keyvault_ms"] = checkpoint_ms(keyvault_signer(emu), rounds, warm=True)
        # verify_audit checks the checkpoints against one key: the Key Vault ones are checked through --key.
        started = time.monotonic()
        call_command("verify_audit", key=[os.environ["PORTAL_AUDIT_SIGNING_KEY"], f"{emu.url}/keys/audit-checkpoints"])
        result["verify_s"] = time.monotonic() - started
        result["verify_eps"] = events / result["verify_s"]
        result.update(references(events))
    return result


def fill(count: int, chain_length: int) -> None:
    from django.utils import timezone

    from requests_app import audit
    from requests_app.models import AuditChainHead, AuditEvent

    now = timezone.now()
    events, heads = [], []
    for first in range(0, count, chain_length):
        key, prev = f"request:{uuid.uuid4()}", ""
        for seq in range(1, min(chain_length, count - first) + 1):
            e = AuditEvent(
                created_at=now,
                actor_name="system",
                action="bench.event",
                details={"n": first + seq, "note": "a typical small details object"},
                chain=key,
                seq=seq,
                prev_hash=prev,
            )
            e.hash = prev = audit.event_hash(e)
            events.append(e)
        heads.append(AuditChainHead(key=key, seq=seq, hash=prev))
        if len(events) >= 5000:
            AuditEvent.objects.bulk_create(events)
            events = []
    AuditEvent.objects.bulk_create(events)
    AuditChainHead.objects.bulk_create(heads, batch_size=5000)


def local_signer() -> Any:
    from requests_app import audit_keys

    return audit_keys.LocalKeySigner(os.environ["PORTAL_AUDIT_SIGNING_KEY"])


def keyvault_signer(emu: Any) -> Any:
    from azure.mgmt.authorization import AuthorizationManagementClient
    from azure.mgmt.authorization.models import RoleAssignmentCreateParameters

    from requests_app import audit_keys
    from requests_app.cloud.credentials import connection_verify, portal_credential

    sub = emu.config.subscriptions[0].id
    scope = f"/subscriptions/{sub}/resourceGroups/rg-portal/providers/Microsoft.KeyVault/vaults/kv-portal-audit"
    role = (
        f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/12338af0-0e69-4776-bea7-57ae8d297424"
    )
    authz = AuthorizationManagementClient(
        portal_credential(), sub, base_url=emu.url, connection_verify=connection_verify()
    )
    principal = emu.config.tenants[0].apps[0].object_id
    params = RoleAssignmentCreateParameters(
        role_definition_id=role, principal_id=principal, principal_type="ServicePrincipal"
    )
    authz.role_assignments.create(scope, str(uuid.uuid4()), params)
    return audit_keys.KeyVaultSigner(f"{emu.url}/keys/audit-checkpoints")


def checkpoint_ms(signer: Any, rounds: int, *, warm: bool) -> float:
    from requests_app import checkpoints

    if warm:
        checkpoints.write_checkpoint(signer)  # the first call also gets the portal's token
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        checkpoints.write_checkpoint(signer)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def references(count: int) -> dict[str, float]:
    from requests_app import audit
    from requests_app.models import AuditEvent

    started = time.monotonic()
    rows = list(AuditEvent.objects.order_by("chain", "seq").iterator())
    read = time.monotonic() - started
    started = time.monotonic()
    for e in rows:
        audit.event_hash(e)
    hashed = time.monotonic() - started
    return {"read_eps": count / read, "hash_eps": count / hashed}


if __name__ == "__main__":
    sys.exit(main())
