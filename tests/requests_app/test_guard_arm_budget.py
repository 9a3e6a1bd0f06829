"""The portal's ARM write budget (limits.spend_arm_write, spent by the adapters before every ARM write), proven
through the real provisioning job with the budget ON.

Twenty approved requests are provisioned by an in-process RQ worker, exactly as the job runs them, with the
budget small (PORTAL_ARM_WRITES_PER_SECOND=2, burst 3) and the emulator's own ARM throttle set to the same
bucket. Time is counted, not waited for: the budget's clock seams (`now=`, `sleep=`) run on a virtual clock that
moves only when the budget makes the worker wait, and each such wait moves the emulator's clock by as much. So
whatever the machine's load:

- the budget's own waits add up to exactly what its bucket demands for the writes Azure saw (no spends, no
  waits: the test fails);
- the writes, read from the emulator's call log on the emulator's clock, never beat the bucket in any window;
- the emulator's throttle never answered 429.

One worker running its steps one after another (PORTAL_CONCURRENT_STEPS off), so the accounting is exact: every
spend is followed at once by its write. That all workers share one
bucket in Redis is tests/requests_app/test_limits.py's to prove.
"""

from __future__ import annotations

import django_rq
import pytest
from rq import SimpleWorker

from requests_app import jobs, limits
from requests_app.models import IdentityRequest, Status
from tests.requests_app import factories
from tests.requests_app.conftest import SUBSCRIPTION

RATE, BURST = 2, 3  # the portal's budget: 3 writes at once, then 2 a second
REQUESTS = 20
ARM_WRITES = ("PUT", "PATCH", "POST", "DELETE")


class BudgetClock:
    """The budget's clock: it moves only when the budget makes a worker sleep, and moves the emulator's with it."""

    def __init__(self, control) -> None:
        self.control = control
        self.t = 1_000_000.0
        self.waits: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.t += seconds
        self.control.advance_clock(seconds)


@pytest.fixture
def budget(cloud, control, transactional_db, monkeypatch) -> BudgetClock:
    """The budget on, on a virtual clock, the emulator throttling ARM writes with the same bucket."""
    cloud.PORTAL_ARM_RETRY_TOTAL = 0  # a 429 reaches the portal, rather than being waited out inside the SDK
    cloud.PORTAL_ARM_WRITES_PER_SECOND, cloud.PORTAL_ARM_WRITE_BURST = RATE, BURST
    cloud.PORTAL_CONCURRENT_STEPS = False  # each spend followed at once by its write: the waits add up exactly
    django_rq.get_connection(jobs.QUEUE).delete(limits.arm_budget_key(SUBSCRIPTION))  # a full bucket to start
    clock = BudgetClock(control)
    spend = limits.spend_arm_write
    # The adapters call limits.spend_arm_write(subscription); here the same function runs on the test's clock.
    monkeypatch.setattr(limits, "spend_arm_write", lambda sub: spend(sub, now=clock.now, sleep=clock.sleep))
    return clock


@pytest.fixture
def approved_requests(budget, demo_cluster, requester, approver) -> list[IdentityRequest]:
    queue = django_rq.get_queue(jobs.QUEUE)
    queue.empty()
    reqs = [factories.approved(demo_cluster, requester, approver, sa=f"app-{i}") for i in range(REQUESTS)]
    assert queue.count == REQUESTS  # each approval enqueued its job on commit
    yield reqs
    queue.empty()


def conforms(clocks: list[float], *, rate: float, burst: int) -> list[tuple[int, int]]:
    """Pairs (i, j) of writes between which more went through than a bucket of `burst`, refilling `rate` a
    second, allows: the writes i..j, j - i + 1 of them, in (clocks[j] - clocks[i]) seconds."""
    return [
        (i, j)
        for i in range(len(clocks))
        for j in range(i + 1, len(clocks))
        if j - i + 1 > burst + rate * (clocks[j] - clocks[i]) + 1e-6
    ]


def test_twenty_requests_provisioned_with_the_budget_on_stay_within_it(approved_requests, budget, control) -> None:
    control.settings(throttle={"enabled": True, "bucket": BURST, "refill_per_second": RATE})
    seq = control.last_seq()

    django_rq.get_worker(jobs.QUEUE, worker_class=SimpleWorker).work(burst=True)

    assert set(IdentityRequest.objects.values_list("status", flat=True)) == {Status.READY}
    writes = [c for c in control.calls(since=seq, surface="arm") if c["method"] in ARM_WRITES]
    # Nothing was refused for going too fast, and the budget paced the writes by itself: its own waits are
    # exactly what a bucket of 3 refilling 2 a second takes for this many writes.
    assert [c["path"] for c in writes if c["status"] == 429] == []
    assert sum(budget.waits) == pytest.approx((len(writes) - BURST) / RATE, abs=0.01)
    # Azure saw them paced: no stretch of its clock holds more writes than the bucket allows.
    assert conforms([c["clock"] for c in writes], rate=RATE, burst=BURST) == []
    assert control.state()["throttled"] == 0
    # An identity, a credential and a role assignment per request, all in the one subscription.
    assert len(writes) == 3 * REQUESTS
    assert all(f"/subscriptions/{SUBSCRIPTION}/".lower() in c["path"].lower() for c in writes)
