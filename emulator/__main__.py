"""`python -m emulator`: run the emulator until interrupted and print how clients reach it."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path

from . import config as config_mod
from .server import Emulator


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8443, help="port (default 8443; 0 picks a free one)")
    p.add_argument(
        "--config",
        help="YAML/JSON file of tenants, users, groups, clusters, resources "
        "(default: the built-in demo, emulator/demo.yaml)",
    )
    p.add_argument("--data-dir", default=".emulator", help="where the CA, keys and env file go (default .emulator)")
    p.add_argument("--state-file", help="JSON file to persist state in, so a demo survives a restart")
    p.add_argument("--latency-ms", type=float, help="latency added to every call")
    p.add_argument("--public-host", default="localhost", help="host name clients use (default localhost)")
    p.add_argument("--env-file", help="write the client environment as KEY=VALUE lines to this file")
    p.add_argument("--quiet", action="store_true", help="print only the ready line")
    args = p.parse_args(argv)

    started = time.monotonic()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s emulator %(levelname)s %(message)s")
    cfg = config_mod.load(args.config)
    emu = Emulator(
        cfg,
        host=args.host,
        port=args.port,
        data_dir=Path(args.data_dir),
        state_file=args.state_file,
        latency_ms=args.latency_ms,
        public_host=args.public_host,
    )
    loop = asyncio.new_event_loop()
    loop.run_until_complete(emu.start_async())
    env = emu.env()
    env_file = Path(args.env_file) if args.env_file else Path(args.data_dir) / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    if not args.quiet:
        print(json.dumps(emu.endpoints(), indent=2))
        print("\n# Point clients at the emulator:")
        for k, v in env.items():
            print(f"export {k}={v}")
        print(f"# (also written to {env_file})")
    print(f"emulator ready at {emu.url} in {time.monotonic() - started:.2f}s", flush=True)

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(stop.wait())
    loop.run_until_complete(emu.stop_async())
    return 0


if __name__ == "__main__":
    sys.exit(main())
