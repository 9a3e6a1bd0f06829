"""How fast the emulator starts and how many calls per second it serves.

Starts `python -m emulator` as its own process (as `make run` does), measures the time until it answers,
then drives it over HTTPS with keep-alive connections from an aiohttp client in this process:
  1. unauthenticated GETs of the Entra discovery document (the cheapest call),
  2. authenticated ARM GETs of a user-assigned identity (bearer token verified on every call),
  3. authenticated ARM PUTs of identities (writes, the throttling path off).
It prints requests/s and latency percentiles for each, and the emulator's resident memory.

Usage: python bench/emulator_throughput.py [--seconds 5] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emulator.config import load  # noqa: E402

CFG = load(None)
TENANT = CFG.tenants[0]
APP = TENANT.apps[0]
SUB = CFG.subscriptions[0].id
RG = CFG.subscriptions[0].resource_groups[0].name
IDENT = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities"


def start_emulator(data_dir: str) -> tuple[subprocess.Popen, str, float]:
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", "0", "--data-dir", data_dir, "--quiet"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "emulator ready at https://localhost:PORT in 0.03s"
    ready = time.monotonic() - started
    if "ready at" not in line:
        proc.kill()
        raise SystemExit(f"emulator did not start: {line!r}")
    return proc, line.split("ready at ")[1].split()[0], ready


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def drive(
    session: aiohttp.ClientSession,
    method: str,
    make_url,
    seconds: float,
    concurrency: int,
    headers: dict[str, str],
    body=None,
) -> tuple[int, list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    counter = 0

    async def worker() -> None:
        nonlocal errors, counter
        while time.monotonic() < deadline:
            counter += 1
            t0 = time.perf_counter()
            async with session.request(method, make_url(counter), headers=headers, json=body) as resp:
                await resp.read()
                if resp.status >= 400:
                    errors += 1
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, errors


def report(name: str, n: int, lat: list[float], errors: int, seconds: float) -> None:
    lat.sort()
    p50 = statistics.median(lat) * 1000
    p95 = lat[int(len(lat) * 0.95) - 1] * 1000
    print(f"{name:<44} {n / seconds:8.0f} req/s   p50 {p50:6.1f} ms   p95 {p95:6.1f} ms   errors {errors}")


async def main_async(url: str, ca: str, seconds: float, concurrency: int, pid: int) -> None:
    ctx = ssl.create_default_context(cafile=ca)
    conn = aiohttp.TCPConnector(ssl=ctx, limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:
        form = {
            "grant_type": "client_credentials",
            "client_id": APP.client_id,
            "client_secret": APP.secrets[0],
            "scope": "https://management.azure.com/.default",
        }
        async with s.post(f"{url}/{TENANT.id}/oauth2/v2.0/token", data=form) as r:
            token = (await r.json())["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        async with s.put(
            f"{url}{IDENT}/bench-one?api-version=2024-11-30", json={"location": "westeurope"}, headers=auth
        ) as r:
            assert r.status in (200, 201), await r.text()

        disco = f"{url}/{TENANT.id}/v2.0/.well-known/openid-configuration"
        report(
            "GET Entra discovery (no auth)", *await drive(s, "GET", lambda i: disco, seconds, concurrency, {}), seconds
        )
        one = f"{url}{IDENT}/bench-one?api-version=2024-11-30"
        report(
            "GET ARM identity (bearer token verified)",
            *await drive(s, "GET", lambda i: one, seconds, concurrency, auth),
            seconds,
        )
        report(
            "PUT ARM identity (create, bearer verified)",
            *await drive(
                s,
                "PUT",
                lambda i: f"{url}{IDENT}/bench-{i}?api-version=2024-11-30",
                seconds,
                concurrency,
                auth,
                {"location": "westeurope"},
            ),
            seconds,
        )
        print(f"emulator resident memory after the run: {rss_mib(pid):.0f} MiB")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        starts = []
        for _ in range(3):
            proc, url, ready = start_emulator(data_dir)
            starts.append(ready)
            proc.terminate()
            proc.wait()
        print(f"python -m emulator ready in (3 cold starts, same data dir): {', '.join(f'{s:.2f}s' for s in starts)}")
        proc, url, _ = start_emulator(data_dir)
        try:
            asyncio.run(main_async(url, os.path.join(data_dir, "ca.pem"), args.seconds, args.concurrency, proc.pid))
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
