"""When to retry a failed cloud call, and how long to wait. Pure functions of the error and the step so far.

Permanent errors (CloudError.permanent) fail at once. Transient ones are retried with exponential backoff and
full jitter (or the service's Retry-After), until the step's attempts or time window run out. Two errors have
their own, longer, window because they are expected right after creation: PrincipalNotFound (a new
identity's principal replicating) and AADSTS70021 (a new federated credential propagating).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from django.conf import settings

from .cloud.errors import CloudError

REPLICATION_CODES = {"PrincipalNotFound"}
PROPAGATION_CODES = {"AADSTS70021"}


@dataclass(frozen=True)
class Decision:
    retry: bool
    delay: float = 0.0
    reason: str = ""


def window_for(error: CloudError) -> float:
    if error.code in REPLICATION_CODES:
        return settings.PORTAL_REPLICATION_WINDOW_SECONDS
    if error.code in PROPAGATION_CODES:
        return settings.PORTAL_VERIFY_WINDOW_SECONDS
    return settings.PORTAL_STEP_RETRY_WINDOW_SECONDS


def backoff(attempt: int, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base·2^(attempt-1))]; spreads retries of many workers apart."""
    cap = min(settings.PORTAL_RETRY_MAX_DELAY_SECONDS, settings.PORTAL_RETRY_BASE_SECONDS * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(0, cap)  # noqa: S311  (jitter, not security)


def decide(error: CloudError, *, attempts: int, elapsed: float, rng: random.Random | None = None) -> Decision:
    """Whether to try again after `attempts` attempts over `elapsed` seconds, and after how long."""
    if error.permanent:
        return Decision(False, reason="permanent")
    window = window_for(error)
    max_attempts = settings.PORTAL_STEP_MAX_ATTEMPTS
    if error.code in REPLICATION_CODES | PROPAGATION_CODES:
        max_attempts = max(max_attempts, 1000)  # bounded by the window alone
    if attempts >= max_attempts:
        return Decision(False, reason=f"gave up after {attempts} attempts")
    # Retry-After is honoured as given (never shortened); the window still bounds the wait.
    delay = error.retry_after if error.retry_after is not None else backoff(attempts, rng)
    if elapsed + delay > window:
        return Decision(False, reason=f"gave up after {attempts} attempts over {elapsed:.0f} s")
    return Decision(True, delay=delay)
