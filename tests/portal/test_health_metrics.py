"""/healthz, /readyz and /metrics in the test process (the gunicorn done-when test: test_gunicorn_production.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from requests_app import provisioning, workflow
from requests_app.observability import health, metrics, outbound
from tests.requests_app.factories import submitted
from tests.requests_app.own_redis import CLOSED_PORT_URL

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "metrics-token-for-tests"


@pytest.fixture
def scraper(settings) -> Client:
    settings.PORTAL_METRICS_TOKEN = TOKEN
    return Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")


@pytest.fixture(autouse=True)
def _fresh_migration_check() -> None:
    health._migrations.update(checked=-1e18, pending=None)


def scrape(scraper: Client) -> str:
    response = scraper.get("/metrics")
    assert response.status_code == 200, response.content
    return response.content.decode()


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
    try:
        return sample(text, name, **labels)
    except AssertionError:
        return 0.0


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`; there must be one."""
    total, found = 0.0, False
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total, found = total + float(m.group(3)), True
    assert found, f"no sample {name}{labels}"
    return total


# ---- health ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_healthz_touches_neither_the_database_nor_a_session_and_ignores_host_and_https(settings) -> None:
    settings.SECURE_SSL_REDIRECT = True  # production behind TLS: a probe over plain HTTP still gets its answer
    client = Client()
    client.cookies["sessionid"] = "a-session-that-would-need-the-database"
    with CaptureQueriesContext(connection) as queries:
        # A kubelet names the pod's IP as host, which ALLOWED_HOSTS does not hold.
        response = client.get("/healthz", HTTP_HOST="10.244.1.17:8000")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}
    assert len(queries) == 0
    assert "Set-Cookie" not in response.headers and not response.cookies


@pytest.mark.django_db
def test_readyz_is_ready_with_database_redis_and_migrations() -> None:
    response = Client().get("/readyz", HTTP_HOST="10.244.1.17:8000")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"] == {"database": "ok", "redis": "ok", "migrations": "ok"}


@pytest.mark.django_db
def test_readyz_is_not_ready_without_redis(settings) -> None:
    settings.RQ_QUEUES = {name: {"URL": CLOSED_PORT_URL} for name in settings.RQ_QUEUES}
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["redis"] == "failed"
    assert body["problems"] == ["redis unreachable: ConnectionError"]


@pytest.mark.django_db
def test_readyz_is_not_ready_with_an_unapplied_migration(monkeypatch) -> None:
    from django.db.migrations.recorder import MigrationRecorder

    latest = MigrationRecorder.Migration.objects.filter(app="requests_app").order_by("-id").first()
    MigrationRecorder.Migration.objects.filter(pk=latest.pk).delete()  # rolled back with the test's transaction
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["migrations"] == "failed"
    assert f"requests_app.{latest.name}" in response.json()["problems"][0]


@pytest.mark.django_db
def test_the_migration_check_is_cached_between_probes(settings) -> None:
    settings.PORTAL_READY_MIGRATIONS_CACHE_SECONDS = 3600
    assert Client().get("/readyz").status_code == 200
    with CaptureQueriesContext(connection) as queries:
        assert Client().get("/readyz").status_code == 200
    assert [q["sql"] for q in queries] == ["SELECT 1"]


@pytest.mark.django_db
def test_readyz_reports_outside_services_as_last_heard_and_stays_ready(settings) -> None:
    outbound._noted.clear()
    outbound.record("arm", "PUT Microsoft.ManagedIdentity/userAssignedIdentities", "timeout", 5.0)
    with CaptureQueriesContext(connection):
        response = Client().get("/readyz")
    assert response.status_code == 200  # an outside service down is reported, not a reason to leave the Service
    assert response.json()["outside_services"]["arm"]["reachable"] is False
    assert response.json()["outside_services"]["arm"]["last_status"] == "timeout"


# ---- /metrics is not for the internet -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_refuses_requests_without_the_token(settings, admin) -> None:
    assert Client().get("/metrics").status_code == 404  # no token configured: nobody
    settings.PORTAL_METRICS_TOKEN = TOKEN
    assert Client().get("/metrics").status_code == 401
    assert Client(HTTP_AUTHORIZATION="Bearer wrong").get("/metrics").status_code == 401
    signed_in = Client()
    signed_in.force_login(admin)
    assert signed_in.get("/metrics").status_code == 401  # a session, even an admin's, is not the token
    assert Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}").get("/metrics").status_code == 200


# ---- what /metrics shows ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_show_steps_outbound_calls_429s_http_and_scrape_time_gauges(
    scraper, cloud, control, demo_cluster, requester, approver
) -> None:
    cloud.PORTAL_ARM_RETRY_TOTAL = 0
    before = scrape(scraper)
    control.add_fault(r"/serviceaccounts$", method="POST", status=429, retry_after=1, times=1)
    req = submitted(demo_cluster, requester, "payments-api")
    workflow.approve_request(req, actor=approver)
    provisioning.provision(req.pk, sleep=lambda s: None)  # the 429's wait: the engine's time moves on, no one waits
    Client().get("/requests/")  # one page view, counted by its route name
    text = scrape(scraper)

    def grew(name: str, **labels: str) -> float:
        return value(text, name, **labels) - value(before, name, **labels)

    assert grew("portal_step_attempts_total", operation="provisioning", outcome="succeeded") >= 4
    assert grew("portal_step_failures_total", operation="provisioning", outcome="retrying") >= 1
    assert grew("portal_outbound_request_duration_seconds_count", service="arm") >= 1
    assert grew("portal_outbound_request_duration_seconds_count", service="entra") >= 1
    assert grew("portal_outbound_request_duration_seconds_count", service="kubernetes", status="201") >= 1
    assert grew("portal_outbound_throttled_total", service="kubernetes") == 1
    assert grew("portal_outbound_retry_after_seconds_total", service="kubernetes") == 1
    assert grew("portal_http_requests_total", view="my_requests", status="302") == 1
    assert sample(text, "portal_requests", status="ready") >= 1
    assert sample(text, "portal_metrics_source_up", source="database") == 1
    assert sample(text, "portal_metrics_source_up", source="redis") == 1
    assert "portal_queue_jobs{" in text and "portal_queue_oldest_job_age_seconds{" in text
    assert sample(text, "portal_outbound_reachable", service="arm") == 1


def test_operation_labels_name_kinds_never_ids() -> None:
    msi = "Microsoft.ManagedIdentity/userAssignedIdentities"
    path = f"/subscriptions/s1/resourceGroups/rg/providers/{msi}/x/federatedIdentityCredentials/y"
    assert outbound.operation("arm", "PUT", path) == f"PUT {msi}/federatedIdentityCredentials"
    assert outbound.operation("graph", "GET", "/v1.0/users/abc/transitiveMemberOf") == "GET users/transitiveMemberOf"
    assert outbound.operation("kubernetes", "GET", "/k8s/aks-demo/api/v1/namespaces/team-a/serviceaccounts/api") == (
        "GET namespaces/serviceaccounts"
    )
    assert outbound.operation("entra", "POST", "/tenant/oauth2/v2.0/token") == "POST token"


# ---- the dashboard and the alert rules use only metrics the portal has ------------------------------------------


def referenced_metrics(expression: str) -> set[str]:
    return set(re.findall(r"\b(portal_[a-z_]+)\b", expression))


def test_dashboard_and_alert_rules_use_only_metrics_the_portal_exposes() -> None:
    import json

    exposed = metrics.exposed_names()
    dashboard = json.loads((ROOT / "deploy/monitoring/grafana-dashboard.json").read_text())
    used = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used |= referenced_metrics(target["expr"])
    rules = yaml.safe_load((ROOT / "deploy/monitoring/prometheus-rules.yaml").read_text())
    alerts = [r for group in rules["groups"] for r in group["rules"]]
    for rule in alerts:
        used |= referenced_metrics(rule["expr"])
    assert used - exposed == set()
    names = {r["alert"] for r in alerts}
    assert {
        "ProvisioningFailed",
        "QueueOldestJobTooOld",
        "DriftFindingsOpen",
        "OutsideServiceThrottling",
        "AuditChainVerificationFailed",
    } <= names
    # Every metric the portal has is on the dashboard or in a rule.
    assert {base(n) for n in exposed} - {base(n) for n in used} == set()


def base(name: str) -> str:
    return re.sub(r"_(total|bucket|sum|count|created)$", "", name)
