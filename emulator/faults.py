"""Fault injection, ARM's per-subscription write throttling, and the call log.

A fault rule matches method + path pattern (+ optional body fields) and then answers an error, adds
latency, or drops the connection — N times, or with a probability. Error bodies take the shape of the
surface the path belongs to (ARM, Entra, Kubernetes), so clients see the same exceptions as from Azure.
"""

from __future__ import annotations

import math
import random
import re
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FaultRule:
    path: str  # regular expression, searched (case-insensitively) in the request path
    method: str = "*"
    body: dict[str, Any] | None = None  # dotted JSON field -> required value, e.g. {"properties.subject": "…"}
    status: int | None = None
    code: str | None = None
    message: str | None = None
    retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    latency_ms: float = 0.0
    drop: bool = False  # close the connection without answering
    times: int | None = None  # None: every matching call
    probability: float = 1.0
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    hits: int = 0

    def __post_init__(self) -> None:
        self._regex = re.compile(self.path, re.IGNORECASE)
        if self.status is None and not self.drop and not self.latency_ms:
            raise ValueError("a fault rule needs a status, drop or latency_ms")

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}

    def matches(self, method: str, path: str, body: Any, rng: random.Random) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method != "*" and self.method.upper() != method:
            return False
        if not self._regex.search(path):
            return False
        if self.body:
            for dotted, want in self.body.items():
                if _dig(body, dotted) != want:
                    return False
        if self.probability < 1.0 and rng.random() >= self.probability:
            return False
        return True


def _dig(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


class Faults:
    def __init__(self, seed: int | None = None):
        self.rules: list[FaultRule] = []
        self.rng = random.Random(seed)  # nosec B311 # seeded fault injection must be reproducible, not secret

    def add(self, **spec: Any) -> FaultRule:
        rule = FaultRule(**spec)
        self.rules.append(rule)
        return rule

    def remove(self, rule_id: str) -> bool:
        before = len(self.rules)
        self.rules = [r for r in self.rules if r.id != rule_id]
        return len(self.rules) != before

    def clear(self) -> None:
        self.rules.clear()

    def match(self, method: str, path: str, body: Any) -> FaultRule | None:
        for rule in self.rules:
            if rule.matches(method, path, body, self.rng):
                rule.hits += 1
                return rule
        return None


@dataclass
class Bucket:
    tokens: float
    updated: float


class Throttle:
    """ARM's write budget per subscription: a token bucket of `bucket` writes refilling `refill_per_second`."""

    def __init__(self) -> None:
        self.buckets: dict[str, Bucket] = {}
        self.throttled = 0

    def take(self, subscription: str, *, size: int, refill: float, now: float) -> tuple[bool, float, int]:
        """Spend one write; return (allowed, seconds until one is free, writes remaining)."""
        b = self.buckets.setdefault(subscription.lower(), Bucket(tokens=float(size), updated=now))
        b.tokens = min(float(size), b.tokens + (now - b.updated) * refill)
        b.updated = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True, 0.0, int(b.tokens)
        self.throttled += 1
        wait = (1.0 - b.tokens) / refill if refill > 0 else 60.0
        return False, wait, 0

    def reset(self) -> None:
        self.buckets.clear()
        self.throttled = 0


class CallLog:
    """Every call the emulator answered, in order: what tests and benchmarks assert on."""

    def __init__(self, maxlen: int = 200_000):
        self.entries: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self.seq = 0

    def start(self, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        entry = {"seq": self.seq, "start": time.time(), "end": None, "status": None, **fields}
        self.entries.append(entry)
        return entry

    def query(
        self, *, since: int = 0, method: str | None = None, path: str | None = None, surface: str | None = None
    ) -> list[dict[str, Any]]:
        regex = re.compile(path, re.IGNORECASE) if path else None
        return [
            e
            for e in self.entries
            if e["seq"] > since
            and (method is None or e["method"] == method.upper())
            and (regex is None or regex.search(e["path"]))
            and (surface is None or e["surface"] == surface)
        ]

    def clear(self) -> None:
        self.entries.clear()


def retry_after_header(seconds: float) -> str:
    # Retry-After is whole seconds on the wire.
    return str(max(1, math.ceil(seconds)))
