"""Limits shared by every worker, kept in Redis: ARM's write budget per subscription, one FIC writer per identity.

Redis holds only these short-lived counters and locks; losing them (a flush, a restart) costs at most a
moment of looser limits — the emulator and ARM still answer 409/429, which the retries handle.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import django_rq
from django.conf import settings

from .observability import metrics

# A token bucket: `burst` writes at once, refilling `rate` per second. Returns 0 when a token was taken,
# else the milliseconds until one is free. Atomic in Redis, so all workers share one budget. Its clock is
# Redis's own (one clock for every worker), or ARGV[3] in milliseconds when a test passes one.
_BUCKET = """
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local burst, rate = tonumber(ARGV[2]), tonumber(ARGV[1])
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or burst)
local stamp = tonumber(redis.call('HGET', KEYS[1], 'stamp') or now)
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate / 1000)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'stamp', now)
redis.call('PEXPIRE', KEYS[1], 60000)
return wait
"""


def _redis():
    return django_rq.get_connection(settings.PORTAL_PROVISIONING_QUEUE)


def arm_budget_key(subscription_id: str) -> str:
    return f"{settings.PORTAL_REDIS_PREFIX}portal:arm-writes:{subscription_id.lower()}"


def fic_writer_key(identity_id: str) -> str:
    return f"{settings.PORTAL_REDIS_PREFIX}portal:fic-writer:{identity_id.lower()}"


def spend_arm_write(subscription_id: str, *, sleep=time.sleep, now: Callable[[], float] | None = None) -> float:
    """Wait until the subscription's write budget allows one more ARM write; returns the seconds waited.

    `now` (seconds) replaces Redis's clock, so a test's `sleep` can move time instead of waiting for it.
    """
    rate, burst = settings.PORTAL_ARM_WRITES_PER_SECOND, settings.PORTAL_ARM_WRITE_BURST
    if rate <= 0:
        return 0.0
    conn = _redis()
    script = conn.register_script(_BUCKET)
    waited = 0.0
    while True:
        clock = [int(now() * 1000)] if now else []
        wait_ms = int(script(keys=[arm_budget_key(subscription_id)], args=[rate, burst, *clock]))
        if wait_ms <= 0:
            if waited:
                metrics.ARM_BUDGET_WAIT.inc(waited)  # README: "Health and metrics"
            return waited
        sleep(wait_ms / 1000)
        waited += wait_ms / 1000


@contextlib.contextmanager
def fic_writer(identity_id: str, *, timeout: float | None = None) -> Iterator[None]:
    """Hold the one right to write federated credentials on `identity_id` (Azure refuses concurrent writes).

    The lock runs out after `timeout` (default: one lease), so a SIGKILLed holder blocks the identity no
    longer than its lease blocks its request. Running out early is safe: an overlap gets Azure's 409, retried.
    """
    timeout = timeout or settings.PORTAL_LEASE_SECONDS
    # Wait a little longer than the lock can live, so a dead holder's lock is outlasted rather than raced.
    lock = _redis().lock(fic_writer_key(identity_id), timeout=timeout, blocking_timeout=timeout + 1)
    if not lock.acquire():
        from .cloud.errors import CloudError

        raise CloudError(
            "Another worker is still writing this identity's federated credentials.",
            permanent=False,
            code="FicWriterBusy",
        )
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # the lock may have expired or Redis been flushed meanwhile
            lock.release()
