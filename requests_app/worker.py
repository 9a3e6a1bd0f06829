"""The RQ worker `manage.py rqworker` runs (settings.RQ["WORKER_CLASS"]): warm, one process for many jobs.

RQ's default worker forks a fresh process for every job, so each job started cold: it fetched the portal's tokens
again, opened new TLS connections and built every SDK client anew. This one runs jobs in its own process, like
RQ's SimpleWorker, so what the cloud adapters keep per process (the credential with its tokens, ARM clients and
kubernetes clients with their connection pools, the Graph session) serves every job after the first.

What the fork gave for free is kept by other means:
- A job that raises is recorded as failed by RQ (as before); the worker takes the next job.
- A job past its timeout gets RQ's JobTimeoutException (SIGALRM, as inside a forked job). A job that swallows it
  and runs on for `PORTAL_WORKER_STOP_GRACE_SECONDS` more is stopped the hard way: the worker replaces itself
  with a fresh copy (exec, same process id, so whatever supervises it sees no exit). The request's lease runs out
  and the sweep resumes it, as after a crash.
- What jobs leak (memory, objects) is bounded by recycling: after `PORTAL_WORKER_MAX_JOBS` jobs, or once the
  process has used `PORTAL_WORKER_MAX_MEMORY_MB`, the worker finishes the job, says goodbye to RQ and execs a
  fresh copy of itself.
- Database connections are checked between jobs as Django does between requests (CONN_MAX_AGE, unusable ones).
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import sys
import uuid
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from rq import SimpleWorker
from rq.job import Job
from rq.queue import Queue
from rq.timeouts import UnixSignalDeathPenalty

from portal import request_ids

from .observability import metrics

log = logging.getLogger(__name__)


class _StopOrRestart(UnixSignalDeathPenalty):
    """RQ's job timeout (SIGALRM raises JobTimeoutException in the job), then, if the job is still running
    `grace` seconds later (it caught the exception and went on), `hard_stop`."""

    grace: int = 60
    hard_stop: Any = None  # set per worker: a staticmethod that does not return

    def handle_death_penalty(self, signum: int, frame: Any) -> None:
        signal.signal(signal.SIGALRM, self._ignored)
        signal.alarm(max(1, self.grace))
        super().handle_death_penalty(signum, frame)

    def _ignored(self, signum: int, frame: Any) -> None:
        log.error("a job ran %s s past its timeout of %s s after being told to stop", self.grace, self._timeout)
        self.hard_stop()


class Worker(SimpleWorker):
    """Runs every job in this process (no fork), so per-process caches stay warm; recycles itself by exec."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Imported once, before the first job: the kubernetes client's models alone are about a second of CPU.
        from kubernetes.client import CoreV1Api  # noqa: F401

        from . import drift, provisioning  # noqa: F401

        self.jobs_done = 0
        self.restart_requested = False
        if settings.PORTAL_WORKER_METRICS_PORT:
            # issue 12: a worker pod's steps and outbound calls, for Prometheus (README: "Health and metrics").
            metrics.serve_counted(settings.PORTAL_WORKER_METRICS_PORT)
        self.death_penalty_class = type(
            "StopOrRestart",
            (_StopOrRestart,),
            {"grace": settings.PORTAL_WORKER_STOP_GRACE_SECONDS, "hard_stop": staticmethod(self.hard_stop)},
        )

    def execute_job(self, job: Job, queue: Queue) -> None:
        close_old_connections()  # as Django does around a request: expired or broken connections go
        try:
            with request_ids.bound(**job_log_context(job)):
                super().execute_job(job, queue)
        finally:
            close_old_connections()
        self.jobs_done += 1
        if why := self.recycle_reason():
            self.log.info("Worker %s: %s; restarting after this job", self.name, why)
            self.restart_requested = True
            self._stop_requested = True  # RQ's work loop ends after this job, cleanly

    def recycle_reason(self) -> str | None:
        """Why this process should be replaced by a fresh one now, if it should."""
        if self.jobs_done >= settings.PORTAL_WORKER_MAX_JOBS:
            return f"{self.jobs_done} jobs done"
        used_mb = peak_memory_mb()
        if used_mb >= settings.PORTAL_WORKER_MAX_MEMORY_MB:
            return f"{used_mb:.0f} MB used"
        return None

    def work(self, *args: Any, **kwargs: Any) -> bool:
        worked = super().work(*args, **kwargs)  # its teardown stops the scheduler and unregisters the worker
        if self.restart_requested and self._shutdown_requested_date is None:  # not when told to stop (SIGTERM)
            restart()
        return worked

    def hard_stop(self) -> None:
        """Leave a job that will not stop: no clean teardown (the job is mid-way); the scheduler process this
        worker started is stopped so the fresh copy can start its own."""
        if self.scheduler and self.scheduler._process and self.scheduler._process.pid:
            os.kill(self.scheduler._process.pid, signal.SIGTERM)
        restart()


def job_log_context(job: Job) -> dict[str, str | None]:
    """What every log line of `job` carries (issue 12 logs): the request id of the web request (or job) that
    enqueued it, from its meta (queueing._meta), else a new one; the job's id; and the identity request, the
    first argument of the jobs that work on one."""
    first = job.args[0] if job.args else None
    try:
        identity_request = str(uuid.UUID(str(first))) if first is not None else None
    except ValueError:
        identity_request = None
    request_id = request_ids.sane((job.meta or {}).get(request_ids.META_KEY)) or request_ids.new_id()
    return {"request_id": request_id, "job": job.id, "identity_request": identity_request}


def peak_memory_mb() -> float:
    """The most memory (resident) this process has used, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def restart() -> None:
    """Replace this process with a fresh run of the same command line (same pid; never returns).

    Python opens files and sockets non-inheritable, so Redis and database connections close with the old image.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # noqa: S606 # nosec B606 # our own command line again
