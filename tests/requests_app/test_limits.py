"""Limits shared by all workers through Redis: ARM's write budget per subscription, one FIC writer per identity."""

from __future__ import annotations

import threading
import time
import uuid

import django_rq
import pytest

from requests_app import limits
from requests_app.cloud.errors import CloudError
from tests import isolation


@pytest.fixture
def subscription() -> str:
    return str(uuid.uuid4())  # a bucket of its own: buckets live in Redis for a minute


class Waits:
    """The `sleep` seam: records every wait, and really waits (the bucket refills by Redis's clock)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(seconds)

    @property
    def total(self) -> float:
        return sum(self.waits)


def test_writes_within_the_burst_do_not_wait(settings, subscription) -> None:
    settings.PORTAL_ARM_WRITES_PER_SECOND, settings.PORTAL_ARM_WRITE_BURST = 20, 5
    waits = Waits()
    assert [limits.spend_arm_write(subscription, sleep=waits) for _ in range(5)] == [0.0] * 5
    assert waits.waits == []


class Clock:
    """The bucket's clock for a test: time moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.t = 1_000_000.0
        self.waits: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.t += seconds


def test_the_bucket_paces_writes_beyond_the_burst_to_the_rate(settings, subscription) -> None:
    settings.PORTAL_ARM_WRITES_PER_SECOND, settings.PORTAL_ARM_WRITE_BURST = 4, 2
    clock = Clock()
    waited = [limits.spend_arm_write(subscription, sleep=clock.sleep, now=clock.now) for _ in range(5)]
    assert waited[:2] == [0.0, 0.0]  # the burst
    # Then each write waits exactly for its token (one every 250 ms), whatever else the machine is doing.
    assert waited[2:] == [0.25, 0.25, 0.25]
    assert clock.waits == [0.25, 0.25, 0.25]


def test_all_workers_share_one_budget_per_subscription(settings, subscription) -> None:
    settings.PORTAL_ARM_WRITES_PER_SECOND, settings.PORTAL_ARM_WRITE_BURST = 20, 4
    waits = Waits()
    threads = [
        threading.Thread(target=lambda: [limits.spend_arm_write(subscription, sleep=waits) for _ in range(3)])
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 12 writes from 4 "workers", burst 4: the other 8 waited for tokens, about 0.4 s between them all.
    assert len(waits.waits) >= 8
    assert limits.spend_arm_write(subscription.upper(), sleep=waits) > 0  # the same bucket, whatever the case


def test_subscriptions_have_separate_budgets(settings, subscription) -> None:
    settings.PORTAL_ARM_WRITES_PER_SECOND, settings.PORTAL_ARM_WRITE_BURST = 1, 1
    waits = Waits()
    limits.spend_arm_write(subscription, sleep=waits)
    limits.spend_arm_write(str(uuid.uuid4()), sleep=waits)
    assert waits.waits == []


def test_a_rate_of_zero_turns_the_budget_off(settings, subscription) -> None:
    settings.PORTAL_ARM_WRITES_PER_SECOND = 0
    settings.RQ_QUEUES = isolation.queues_on("redis://127.0.0.1:1/0", settings.RQ_QUEUES)  # nobody listens there
    assert limits.spend_arm_write(subscription, sleep=pytest.fail) == 0.0  # not even Redis is asked


def test_the_bucket_lives_in_redis_and_expires(settings, subscription) -> None:
    settings.PORTAL_ARM_WRITES_PER_SECOND, settings.PORTAL_ARM_WRITE_BURST = 20, 2
    limits.spend_arm_write(subscription)
    conn = django_rq.get_connection(settings.PORTAL_PROVISIONING_QUEUE)
    key = limits.arm_budget_key(subscription)
    assert float(conn.hget(key, "tokens")) == pytest.approx(1.0, abs=0.1)
    assert 0 < conn.pttl(key) <= 60_000


# ---- one FIC writer per identity ------------------------------------------------------------------------------


def test_a_second_fic_writer_on_one_identity_waits_for_the_first() -> None:
    identity = f"/subscriptions/x/identities/{uuid.uuid4()}"
    spans: list[tuple[str, float, float]] = []

    def write(name: str) -> None:
        with limits.fic_writer(identity):
            start = time.monotonic()
            time.sleep(0.1)
            spans.append((name, start, time.monotonic()))

    threads = [threading.Thread(target=write, args=(n,)) for n in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans.sort(key=lambda s: s[1])
    assert len(spans) == 3
    assert all(prev[2] <= nxt[1] for prev, nxt in zip(spans, spans[1:], strict=False))  # one after the other


def test_writers_on_different_identities_run_at_once() -> None:
    with limits.fic_writer(f"/identities/{uuid.uuid4()}"), limits.fic_writer(f"/identities/{uuid.uuid4()}"):
        pass  # would block (and time out) if the lock were global


def test_a_writer_that_cannot_get_the_lock_in_time_raises_a_transient_error() -> None:
    identity = f"/identities/{uuid.uuid4()}"
    with limits.fic_writer(identity):
        with pytest.raises(CloudError) as caught, limits.fic_writer(identity.upper(), timeout=0.2):
            pass
    assert caught.value.code == "FicWriterBusy" and not caught.value.permanent
    with limits.fic_writer(identity, timeout=0.2):
        pass  # released after the first writer


def test_a_lock_lost_to_a_redis_flush_does_not_fail_the_writer(settings) -> None:
    identity = f"/identities/{uuid.uuid4()}"
    with limits.fic_writer(identity):
        django_rq.get_connection(settings.PORTAL_PROVISIONING_QUEUE).delete(limits.fic_writer_key(identity))
    # Leaving the block did not raise, and the lock is free.
    with limits.fic_writer(identity, timeout=0.2):
        pass


def test_a_lock_left_by_a_killed_writer_runs_out_with_its_lease(settings) -> None:
    # A SIGKILLed worker never releases; the next writer waits at most one lease, not minutes.
    settings.PORTAL_LEASE_SECONDS = 0.5
    identity = f"/identities/{uuid.uuid4()}"
    redis = django_rq.get_connection(settings.PORTAL_PROVISIONING_QUEUE)
    redis.set(limits.fic_writer_key(identity), "dead-worker", px=500)
    with limits.fic_writer(identity):
        pass
