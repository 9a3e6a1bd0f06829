"""The one engine that runs every operation on a request: provisioning, revocation, verification, drift repair.

An operation is a declared list of steps, each naming the steps it needs first. The engine owns everything
around them: the request's lease, the Step rows (attempts, timings, errors, the next attempt), the audit events,
retries and their waits. A run does what is due now and returns:

- a step starts as soon as the steps it needs have succeeded; steps declared `concurrent` (they use no
  database) run in threads of this job, so the credential, the role assignments and the ServiceAccount are made
  at the same time once the identity exists, and the verification starts while the roles may still be going;
- a transient error records when the next attempt is due (retry.decide: backoff with full jitter, Retry-After,
  the long windows for PrincipalNotFound and AADSTS70021) and the run returns `Outcome.retry_at`: the job puts
  itself back on the queue for then (RQ's scheduler) and the worker moves on. Waiting never holds a worker;
- a permanent error fails the step (and the request, for provisioning and revocation), audited, retryable;
- when every step has succeeded the operation's `finish` runs (ready, revoked, …).

Steps that run in threads must not touch the database: the engine reads what they need before (the request, its
cluster and grants are loaded once) and writes what they return after, in this thread (`StepSpec.save`). Steps
not declared `concurrent` (the identity, revocation and repair steps) run in this thread and may.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connections
from django.utils import timezone

from . import leases, retry, workflow
from .cloud.errors import CloudError
from .cloud.identities import noting_arm_calls
from .models import IdentityRequest, Status, Step
from .observability import metrics

log = logging.getLogger(__name__)

Detail = dict[str, Any]
Clock = Callable[[], datetime]
# A scheduled job may be started a moment before its time by a scheduler whose clock runs a little ahead: a step
# due within this margin runs now rather than being put back for a few milliseconds.
DUE_MARGIN = timedelta(seconds=0.5)


@dataclass(frozen=True)
class StepSpec:
    """One step of an operation.

    `run(req, first)` does the work and returns what to record; `first` is True on the step's first attempt of
    this operation, when nothing can have been written by an earlier attempt (a step may then skip a read it
    needs only to resume). `after`: the steps that must have succeeded first. `still_done(req, step)`: whether
    a step that succeeded before still holds (judged from the database alone); a step that does not is run
    again. `save(req)`: runs in the engine's thread after the step, whatever its outcome, to store what the
    step put on the request's objects (it may have made some of its things before it failed).
    """

    name: str
    run: Callable[[IdentityRequest, bool], Detail]
    after: tuple[str, ...] = ()
    still_done: Callable[[IdentityRequest, Step], bool] | None = None
    save: Callable[[IdentityRequest], None] | None = None
    concurrent: bool = False  # uses no database: may run in a thread beside other steps
    # Not before this time (None: as soon as its needs are met), e.g. re-federation's grace period. The step
    # then waits like a retry (its row says until when) and the run ends "waiting": no worker is held meanwhile.
    not_before: Callable[[IdentityRequest], datetime | None] | None = None


@dataclass(frozen=True)
class Operation:
    name: str
    # Take the request into the operation (e.g. approved → provisioning); False: nothing to do.
    start: Callable[[IdentityRequest], bool]
    steps: list[StepSpec]
    finish: Callable[[IdentityRequest], None]
    # Checked before each round of steps: False stops the run (e.g. a repair once a revocation was asked for).
    still_wanted: Callable[[IdentityRequest], bool] = lambda req: True
    # Called once when a step fails for good (after the step and the request recorded it).
    on_failure: Callable[[IdentityRequest, Step], None] | None = None

    def __post_init__(self) -> None:
        names = [s.name for s in self.steps]
        unknown = {a for s in self.steps for a in s.after} - set(names)
        if unknown or len(set(names)) != len(names):
            raise ValueError(f"operation {self.name}: steps {names} need unknown steps {sorted(unknown)}")


@dataclass
class Outcome:
    """How a run ended. `retry_at`: when to run again (a step waits for its next attempt)."""

    state: str  # "done", "failed", "waiting", "busy" (another worker holds the lease), "idle", "stopped"
    retry_at: datetime | None = None
    delay: float | None = None  # the wait this run decided on, in seconds, when it put a step off
    ran: list[str] = field(default_factory=list)


def run(request_id: uuid.UUID, op: Operation, *, now: Clock = timezone.now) -> Outcome:
    """Do what is due of `op` on one request now. Safe to call any number of times, from any worker."""
    # The lease makes this worker the only one on the request; a dead worker's lease runs out and the sweep
    # hands the request to another, which resumes here: finished steps are skipped, nothing is made twice.
    if not leases.acquire(request_id):
        log.info("%s: request %s is leased by another worker", op.name, request_id)
        return Outcome("busy")
    try:
        req = (
            IdentityRequest.objects.select_related("cluster")
            .prefetch_related("grants", "steps")
            .filter(pk=request_id)
            .first()
        )
        if req is None or not op.start(req):
            return Outcome("idle")
        return _rounds(req, op, now)
    finally:
        leases.release(request_id)


def _rounds(req: IdentityRequest, op: Operation, now: Clock) -> Outcome:
    """Start every step whose needs are met, as soon as they are met; record each as it ends.

    A step that runs in a thread is started first and recorded as started just after, in the one transaction that
    also records the steps that just ended: the bookkeeping overlaps the cloud calls instead of preceding them.
    (Should the worker die between the two, the step is not marked started and runs again as a first attempt,
    which every step can: a first attempt's writes are idempotent and adopt what this request made.)
    """
    rows = {s.name: s for s in req.steps.all()}
    for row in rows.values():
        row.request = req  # one instance, so status changes made by workflow are seen everywhere
    run = _Run(req, op, now)
    threads = settings.PORTAL_CONCURRENT_STEPS and any(s.concurrent for s in op.steps)
    pool = ThreadPoolExecutor(max_workers=len(op.steps), thread_name_prefix="step") if threads else None
    running: dict[Future, tuple[StepSpec, Step]] = {}
    try:
        while True:
            done = {s.name for s in op.steps if s.name in run.succeeded or _done(req, rows[s.name], s)}
            pending = [s for s in op.steps if s.name not in done]
            if not pending:
                run.record([])
                op.finish(req)
                return run.outcome
            busy = {spec.name for spec, _ in running.values()}
            due = now() + DUE_MARGIN
            ready = [s for s in pending if set(s.after) <= done and s.name not in busy]
            waits = {s.name for s in ready if s.name in run.deferred or _waiting_until(rows[s.name], due)}
            waits |= {s.name for s in ready if s.name not in waits and _held(req, rows[s.name], s, due)}
            runnable = [s for s in ready if s.name not in waits]
            inline: list[StepSpec] = []
            starting: list[Step] = []
            if runnable and run.failed is None and not run.stopped:
                if not (op.still_wanted(req) and run.renew()):
                    run.stopped = True
                else:
                    for spec in runnable:
                        row = rows[spec.name]
                        first = row.attempts == 0  # read before the start is recorded (which counts it)
                        if pool is not None and spec.concurrent:
                            # In a copy of this context: the step's log lines carry the job's request id too.
                            call = contextvars.copy_context().run
                            running[pool.submit(call, _call_in_thread, spec, req, row, first)] = (spec, row)
                        else:
                            inline.append(spec)
                        starting.append(row)
                    run.outcome.ran += [s.name for s in runnable]
            run.record(starting)
            if inline:  # steps that use the database run here, one after another, once recorded as started
                for spec in inline:
                    row = rows[spec.name]
                    run.ended(spec, row, _call(spec, req, row, row.attempts == 1))
                continue
            if not running:
                run.record([])
                return run.end(waits, rows)
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                spec, row = running.pop(future)
                run.ended(spec, row, future.result())
    finally:
        if pool is not None:
            pool.shutdown(wait=True)  # a job never leaves a step running behind it (its timeout included)


class _Run:
    """What one run of an operation has done so far, and what is still to be written down."""

    def __init__(self, req: IdentityRequest, op: Operation, now: Clock):
        self.req, self.op, self.now = req, op, now
        self.outcome = Outcome("done")
        self.deferred: set[str] = set()  # put off by this run: their next attempt is a later run's, however soon
        self.succeeded: set[str] = set()  # done by this run (a step that is never `still_done` runs once a run)
        self.failed: Step | None = None
        self.stopped = False
        self.results: list[workflow.StepResult] = []  # ended, not yet recorded
        self.saves: list[Callable[[IdentityRequest], None]] = []  # what those steps left on the request's objects
        self.renewed = time.monotonic()  # the lease was taken just before the run

    def renew(self) -> bool:
        # Renewed once a quarter of the lease has gone by: often enough, without a query at every step.
        if time.monotonic() - self.renewed < settings.PORTAL_LEASE_SECONDS / 4:
            return True
        if leases.renew(self.req.pk):
            self.renewed = time.monotonic()
            return True
        log.warning("%s: lost the lease on request %s; stopping", self.op.name, self.req.pk)
        return False

    def ended(self, spec: StepSpec, row: Step, called: Called) -> None:
        if spec.save:
            self.saves.append(spec.save)  # stored with the step's record, in its transaction
        detail, error, arm_calls, seconds = called
        result = _result(row, detail, error, self.now)
        result.arm_calls = [{**c, "attempt": row.attempts} for c in arm_calls]
        # The one place every attempt of every step ends, in whichever process ran it (README: "Health and metrics").
        code = (result.facts or {}).get("code") or ""
        metrics.step_finished(
            self.op.name, row.name, seconds, waiting=bool(result.waiting), failed=bool(result.failed), code=str(code)
        )
        self.results.append(result)
        if result.waiting:
            self.deferred.add(row.name)
            delays = [result.delay] + ([self.outcome.delay] if self.outcome.delay is not None else [])
            self.outcome.delay = min(delays)
        elif result.failed:
            self.failed = self.failed or row
        else:
            self.succeeded.add(row.name)

    def record(self, starting: list[Step]) -> None:
        """Write down, in one transaction, the steps that ended since the last time and the ones starting."""
        if self.results or starting:
            workflow.steps_recorded(self.results, starting, now=self.now(), saves=self.saves)
            self.results, self.saves = [], []

    def end(self, waits: set[str], rows: dict[str, Step]) -> Outcome:
        outcome = self.outcome
        if self.failed is not None:
            if self.op.on_failure:
                self.op.on_failure(self.req, self.failed)
            outcome.state = "failed"
        elif self.stopped:
            outcome.state = "stopped"
        else:
            later = [rows[name].next_attempt_at for name in waits if rows[name].next_attempt_at]
            outcome.state, outcome.retry_at = "waiting", min(later) if later else self.now()
            if self.req.status in (Status.PROVISIONING, Status.REVOKING):
                workflow.request_waits(self.req, outcome.retry_at)
        return outcome


def _waiting_until(row: Step, due: datetime) -> bool:
    return row.state == Step.State.WAITING and row.next_attempt_at is not None and row.next_attempt_at > due


def _held(req: IdentityRequest, row: Step, spec: StepSpec, due: datetime) -> bool:
    """Whether a step that could start is held back by its `not_before`; its row then waits until that time."""
    until = spec.not_before(req) if spec.not_before else None
    if until is None or until <= due:
        return False
    if row.state != Step.State.WAITING or row.next_attempt_at != until:
        row.state, row.next_attempt_at = Step.State.WAITING, until
        Step.objects.filter(pk=row.pk).update(state=row.state, next_attempt_at=until)
    return True


def _done(req: IdentityRequest, row: Step, spec: StepSpec) -> bool:
    return row.state == Step.State.SUCCEEDED and (spec.still_done is None or spec.still_done(req, row))


def _call_in_thread(spec: StepSpec, req: IdentityRequest, row: Step, first: bool) -> Called:
    try:
        return _call(spec, req, row, first)
    finally:
        # A step that ran here must not have used the database; if it did anyway, do not leak the connection.
        connections.close_all()


Called = tuple[Detail | None, Exception | None, list[dict[str, Any]], float]


def _call(spec: StepSpec, req: IdentityRequest, row: Step, first: bool) -> Called:
    """Run the step; what it returned or raised, the ARM calls it made (issue 12 logs: their request ids go into
    the step's detail, for Azure support) and how long it took (for the step metrics)."""
    started = time.monotonic()
    with noting_arm_calls() as arm_calls:
        try:
            return spec.run(req, first), None, arm_calls, time.monotonic() - started
        except Exception as e:  # recorded by _result: a CloudError is retried or fails the step; anything else fails it
            if not isinstance(e, CloudError):
                log.exception("step %s of request %s crashed", row.name, req.pk)
            return None, e, arm_calls, time.monotonic() - started


def _result(row: Step, detail: Detail | None, error: Exception | None, now: Clock) -> workflow.StepResult:
    if error is None:
        return workflow.StepResult(row, detail=detail or {})
    if not isinstance(error, CloudError):  # a bug or an SDK surprise: fail the step visibly rather than loop
        return workflow.StepResult(
            row,
            failed=(
                f"The portal hit an unexpected error ({type(error).__name__}). Retrying may help; "
                "if it does not, an admin can find the details in the worker's log."
            ),
            facts={"code": type(error).__name__, "permanent": False},
        )
    elapsed = (now() - row.started_at).total_seconds() if row.started_at else 0.0
    decision = retry.decide(error, attempts=row.attempts, elapsed=elapsed)
    facts = {"code": error.code, "status": error.status, "permanent": error.permanent}
    if not decision.retry:
        message = error.message if error.permanent else f"{error.message} The portal {decision.reason}."
        return workflow.StepResult(row, failed=message, facts=facts)
    return workflow.StepResult(row, waiting=error.message, delay=decision.delay, facts=facts)


def run_here(
    request_id: uuid.UUID,
    op: Operation,
    *,
    sleep: Callable[[float], None],
    now: Clock = timezone.now,
) -> Outcome:
    """Run `op` to its end in this process, waiting out retries with `sleep` (management commands and tests).

    Time as the engine sees it moves on by what was slept, so `sleep=lambda s: None` runs a whole retry
    window at once, exactly as the scheduled jobs would over real minutes.
    """
    slept = timedelta()

    def clock() -> datetime:
        return now() + slept

    while True:
        outcome = run(request_id, op, now=clock)
        if outcome.state != "waiting" or outcome.retry_at is None:
            return outcome
        # The wait as decided (Retry-After is honoured as given), or what is left of an earlier run's.
        delay = outcome.delay if outcome.delay is not None else (outcome.retry_at - clock()).total_seconds()
        delay = max(0.0, delay)
        sleep(delay)
        slept += timedelta(seconds=delay)
