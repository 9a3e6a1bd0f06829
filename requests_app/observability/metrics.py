"""The portal's Prometheus metrics: what is counted as it happens, and what is read at scrape time.

Counted as it happens (in whichever process does the work: a gunicorn worker, an RQ worker, the scheduler):
HTTP requests by view, provisioning steps, outbound calls, 429s and Retry-After waits, the ARM write budget's
waits, audit checkpoint failures. With PROMETHEUS_MULTIPROC_DIR set (production: every process of a pod shares
one directory), prometheus-client writes them to files there and the web's /metrics adds them up, so a step
a worker ran shows up in the web's answer.

Read at scrape time (`ScrapeCollector`, in the web process answering /metrics): requests by status and open
drift findings (one GROUP BY each), queue depths and the age of the oldest job, the ARM write budget in use,
and each outside service's last known reachability (all from Redis).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Step and outbound calls run from milliseconds (a read) to minutes (a replication wait, a throttled ARM call).
_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

HTTP_REQUESTS = Counter(
    "portal_http_requests", "HTTP requests answered, by view (route name) and status", ["view", "method", "status"]
)
HTTP_DURATION = Histogram(
    "portal_http_request_duration_seconds", "Time to answer an HTTP request, by view", ["view"], buckets=_BUCKETS
)
STEP_DURATION = Histogram(
    "portal_step_duration_seconds",
    "Time one attempt of a provisioning step took, by operation, step and outcome",
    ["operation", "step", "outcome"],
    buckets=_BUCKETS,
)
STEP_ATTEMPTS = Counter(
    "portal_step_attempts",
    "Attempts of provisioning steps, by operation, step and outcome",
    ["operation", "step", "outcome"],
)
STEP_FAILURES = Counter(
    "portal_step_failures",
    "Failed attempts of provisioning steps by error code; outcome: retrying (transient) or failed (for good)",
    ["operation", "step", "code", "outcome"],
)
OUTBOUND_DURATION = Histogram(
    "portal_outbound_request_duration_seconds",
    "Calls to outside services (each try), by service, operation and status (HTTP code, error or timeout)",
    ["service", "operation", "status"],
    buckets=_BUCKETS,
)
THROTTLED = Counter("portal_outbound_throttled", "429 answers from outside services", ["service", "operation"])
RETRY_AFTER = Counter(
    "portal_outbound_retry_after_seconds",
    "Seconds outside services asked the portal to wait (Retry-After)",
    ["service"],
)
ARM_BUDGET_WAIT = Counter(
    "portal_arm_write_budget_wait_seconds", "Seconds workers waited for the portal's own ARM write budget"
)
AUDIT_CHECKPOINT_FAILURES = Counter(
    "portal_audit_checkpoint_failures",
    "Audit checkpoints not written: refused (the chains no longer extend the last checkpoint) or signing",
    ["reason"],
)


def step_finished(operation: str, step: str, seconds: float, *, waiting: bool, failed: bool, code: str) -> None:
    """The engine's hook (requests_app/engine.py), once per attempt of a step, wherever it ran."""
    outcome = "failed" if failed else "retrying" if waiting else "succeeded"
    STEP_DURATION.labels(operation, step, outcome).observe(seconds)
    STEP_ATTEMPTS.labels(operation, step, outcome).inc()
    if outcome != "succeeded":
        STEP_FAILURES.labels(operation, step, code or "unknown", outcome).inc()


# ---- at scrape time ------------------------------------------------------------------------------------------

SCRAPE_GAUGES = {
    "portal_requests": "Identity requests by status",
    "portal_drift_findings_open": "Open drift findings by kind",
    "portal_queue_jobs": "Jobs waiting in each RQ queue",
    "portal_queue_oldest_job_age_seconds": "Age of the oldest job waiting in each RQ queue (0 when empty)",
    "portal_arm_write_budget_in_use": "ARM writes of the portal's budget in use per subscription (burst - tokens)",
    "portal_arm_write_budget_burst": "The ARM write budget's burst (PORTAL_ARM_WRITE_BURST)",
    "portal_outbound_reachable": "Whether the last call to each outside service got an answer (1) or not (0)",
    "portal_outbound_last_call_age_seconds": "Seconds since the last recorded call to each outside service",
    "portal_metrics_source_up": "Whether a scrape-time source (database, redis) could be read",
}


class ScrapeCollector(Collector):
    """Cheap reads at scrape time: two GROUP BYs, a few Redis commands. A source that fails says so in
    portal_metrics_source_up instead of failing the scrape."""

    def collect(self) -> Iterator[Metric]:
        g = {name: GaugeMetricFamily(name, doc, labels=_labels(name)) for name, doc in SCRAPE_GAUGES.items()}
        g["portal_metrics_source_up"].add_metric(["database"], _safely(self._database, g))
        g["portal_metrics_source_up"].add_metric(["redis"], _safely(self._redis, g))
        yield from g.values()

    def _database(self, g: dict[str, GaugeMetricFamily]) -> None:
        from django.db.models import Count

        from requests_app.models import DriftFinding, IdentityRequest

        for row in IdentityRequest.objects.order_by().values("status").annotate(n=Count("pk")):
            g["portal_requests"].add_metric([row["status"]], row["n"])
        open_findings = DriftFinding.objects.filter(resolved_at__isnull=True).order_by()
        for row in open_findings.values("kind").annotate(n=Count("pk")):
            g["portal_drift_findings_open"].add_metric([row["kind"]], row["n"])

    def _redis(self, g: dict[str, GaugeMetricFamily]) -> None:
        import django_rq
        from django.conf import settings
        from rq.job import Job

        from requests_app import limits

        from . import outbound

        conn = django_rq.get_connection(settings.PORTAL_PROVISIONING_QUEUE)
        now = time.time()
        for name in settings.RQ_QUEUES:
            queue = django_rq.get_queue(name)
            g["portal_queue_jobs"].add_metric([name], queue.count)
            age = 0.0
            oldest = conn.lindex(queue.key, 0)
            if oldest:
                job = Job.fetch(oldest.decode(), connection=conn)
                if job.enqueued_at:
                    age = max(0.0, now - job.enqueued_at.timestamp())
            g["portal_queue_oldest_job_age_seconds"].add_metric([name], age)
        rate, burst = settings.PORTAL_ARM_WRITES_PER_SECOND, settings.PORTAL_ARM_WRITE_BURST
        g["portal_arm_write_budget_burst"].add_metric([], burst)
        prefix = limits.arm_budget_key("")
        seconds, micros = conn.time()
        redis_now_ms = seconds * 1000 + micros // 1000
        for key in conn.scan_iter(match=prefix + "*", count=100):
            tokens, stamp = conn.hmget(key, "tokens", "stamp")
            if tokens is None or stamp is None:
                continue
            refilled = min(burst, float(tokens) + max(0.0, redis_now_ms - float(stamp)) * rate / 1000)
            g["portal_arm_write_budget_in_use"].add_metric([key.decode()[len(prefix) :]], max(0.0, burst - refilled))
        for service, seen in outbound.reachability().items():
            g["portal_outbound_reachable"].add_metric([service], 1.0 if seen["ok"] else 0.0)
            g["portal_outbound_last_call_age_seconds"].add_metric([service], max(0.0, now - seen["at"]))


def _labels(name: str) -> list[str]:
    return {
        "portal_requests": ["status"],
        "portal_drift_findings_open": ["kind"],
        "portal_queue_jobs": ["queue"],
        "portal_queue_oldest_job_age_seconds": ["queue"],
        "portal_arm_write_budget_in_use": ["subscription"],
        "portal_arm_write_budget_burst": [],
        "portal_outbound_reachable": ["service"],
        "portal_outbound_last_call_age_seconds": ["service"],
        "portal_metrics_source_up": ["source"],
    }[name]


def _safely(read: Any, g: dict[str, GaugeMetricFamily]) -> float:
    try:
        read(g)
        return 1.0
    except Exception:  # a scrape answers with what it could read; the source's gauge says what it could not
        log.warning("metrics: %s could not be read", read.__name__, exc_info=True)
        return 0.0


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def counted_registry() -> CollectorRegistry:
    """What this process and its pod's other processes counted (multiprocess mode), or this process's alone."""
    if not multiprocess_dir():
        return REGISTRY
    from prometheus_client import multiprocess

    counted = CollectorRegistry()
    multiprocess.MultiProcessCollector(counted)
    return counted


def serve_counted(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104  # nosec B104  # NetworkPolicy guards it
    """A worker pod's own metrics endpoint (`PORTAL_WORKER_METRICS_PORT`): web and workers run in separate pods on
    AKS, so what a worker counts (its steps, its outbound calls) cannot reach the web's /metrics through a shared
    directory. Only what was counted is served here; the scrape-time gauges (queues, requests by status, drift)
    are the web's, so they are not counted twice."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=addr, registry=counted_registry())


def exposition() -> bytes:
    """The text /metrics answers: every process's counters (multiprocess mode) or this one's, and the gauges
    read now."""
    counted = counted_registry()
    scraped = CollectorRegistry()
    scraped.register(ScrapeCollector())
    return generate_latest(counted) + generate_latest(scraped)


def exposed_names() -> set[str]:
    """Every sample name the portal's metrics can expose (the dashboard and alert rules may use only these)."""
    names: set[str] = set()
    for metric in (
        HTTP_REQUESTS,
        HTTP_DURATION,
        STEP_DURATION,
        STEP_ATTEMPTS,
        STEP_FAILURES,
        OUTBOUND_DURATION,
        THROTTLED,
        RETRY_AFTER,
        ARM_BUDGET_WAIT,
        AUDIT_CHECKPOINT_FAILURES,
    ):
        for family in metric.describe():
            suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"]}
            names |= {family.name + s for s in suffixes[family.type]}
    return names | set(SCRAPE_GAUGES)
