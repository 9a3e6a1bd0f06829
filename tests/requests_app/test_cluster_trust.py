"""Clusters are trusted only through Azure: a URL a person typed never receives the portal's token.

The attack (security round 2): an admin registers or edits a cluster with `api_server_url=http://<anywhere>`;
the portal then sent its Entra token for AKS there, at registration (issuer discovery) and on every job. Here a
listener on loopback records every request it gets, and each way in is tried.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.urls import reverse

from emulator import Emulator
from requests_app import clusters, drift
from requests_app.cloud import kubernetes
from requests_app.cloud.errors import CloudError
from requests_app.models import AuditEvent, Cluster, IdentityRequest, Status

from .conftest import DEMO_CLUSTER_ID, DEVOPS, SUBSCRIPTION
from .factories import client_for, submitted


class Listener:
    """A plain HTTP server on loopback that answers 200 to everything and remembers what it was sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                seen.append((self.command, self.path, dict(self.headers)))
                body = b'{"issuer": "http://127.0.0.1/"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.https_url = self.url.replace("http://", "https://")
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def admin_cluster_form(**over: str) -> dict[str, str]:
    return {
        "name": "aks-new",
        "display_name": "",
        "arm_resource_id": DEMO_CLUSTER_ID,
        "subscription_id": SUBSCRIPTION,
        "resource_group": "rg-ids",
        "location": "",
        "oidc_issuer_url": "",
        "api_auth": "entra",
        "kubeconfig_context": "",
        "devops_group_id": DEVOPS,
        "allowed_namespaces": '["team-payments"]',
        "namespace_owners": '{"team-payments": "0f1e2d3c-0004-4000-8000-000000000004"}',
        "allowed_subscriptions": "[]",
        "roles-TOTAL_FORMS": "0",
        "roles-INITIAL_FORMS": "0",
        "roles-MIN_NUM_FORMS": "0",
        "roles-MAX_NUM_FORMS": "1000",
        **over,
    }


def spec(**over) -> dict:
    return {
        "name": "aks-new",
        "subscription_id": SUBSCRIPTION,
        "resource_group": "rg-ids",
        "location": "westeurope",
        "devops_group_id": DEVOPS,
        "allowed_namespaces": ["team-payments"],
        "namespace_owners": {"team-payments": "0f1e2d3c-0004-4000-8000-000000000004"},
        **over,
    }


# ---- registering ----------------------------------------------------------------------------------------------


def test_the_admin_registers_a_cluster_by_its_arm_resource_id(admin, cloud, emu: Emulator) -> None:
    response = client_for(admin).post(reverse("admin:requests_app_cluster_add"), admin_cluster_form())
    assert response.status_code == 302, response.content.decode()
    cluster = Cluster.objects.get(name="aks-new")
    demo = emu.config.cluster("aks-demo")
    assert (cluster.api_server_url, cluster.oidc_issuer_url) == (emu.cluster_api(demo), emu.cluster_issuer(demo))
    assert cluster.api_server_ca == emu.tls.ca_cert.read_text()
    assert cluster.location == "westeurope"  # the cluster's own, when left blank
    event = AuditEvent.objects.get(action="cluster.registered")
    assert event.details["connection"]["api_server_url"] == cluster.api_server_url
    assert event.details["connection"]["api_server_ca"].startswith("sha256:")


def test_a_typed_api_server_url_never_receives_a_token(admin, cloud, listener: Listener) -> None:
    c = client_for(admin)
    # The admin form has no such field any more: what is posted for it is ignored, and an Entra cluster
    # without an ARM resource ID is refused before anything is called.
    for url in (listener.url, listener.https_url):
        data = admin_cluster_form(arm_resource_id="", api_server_url=f"{url}/k8s", oidc_issuer_url=f"{url}/")
        response = c.post(reverse("admin:requests_app_cluster_add"), data)
        assert response.status_code == 200
        assert "registered by its ARM resource ID" in response.content.decode()
    # From YAML (manage.py load_clusters): the keys are refused outright.
    for key in ("api_server_url", "api_server_ca", "api_server_ca_file"):
        with pytest.raises(clusters.ClusterConfigError, match="cannot be given"):
            clusters.register(spec(arm_resource_id=DEMO_CLUSTER_ID, **{key: f"{listener.url}/k8s"}))
    assert not Cluster.objects.filter(name="aks-new").exists()
    assert listener.requests == []


def test_a_typed_issuer_is_fetched_without_any_credential(admin, cloud, listener: Listener) -> None:
    # A kubeconfig cluster without an ARM resource ID names its issuer by hand. Plain http is refused before
    # anything is fetched; the check itself carries no Authorization (and this one names another issuer).
    data = admin_cluster_form(arm_resource_id="", api_auth="kubeconfig", oidc_issuer_url=f"{listener.url}/oidc/")
    response = client_for(admin).post(reverse("admin:requests_app_cluster_add"), data)
    assert response.status_code == 200
    assert "must be https" in response.content.decode()
    assert listener.requests == []


def test_editing_a_cluster_cannot_point_it_elsewhere(admin, cloud, demo_cluster: Cluster, listener, control) -> None:
    url = reverse("admin:requests_app_cluster_change", args=[demo_cluster.pk])
    data = admin_cluster_form(name="aks-demo", api_server_url=f"{listener.url}/k8s")
    response = client_for(admin).post(url, data)
    assert response.status_code == 302, response.content.decode()
    demo_cluster.refresh_from_db()
    assert demo_cluster.api_server_url.startswith("https://localhost:")
    # Every later job's calls go to the API server Azure named, with the token; none to the listener.
    kubernetes.get_service_account(demo_cluster, "team-payments", "payments-api")
    assert listener.requests == []


def test_a_row_pointing_at_a_typed_url_gets_no_token(demo_cluster: Cluster, listener: Listener) -> None:
    # Someone with database access rewrites the row: the adapter refuses rather than send the token.
    for url in (listener.url, listener.https_url):
        Cluster.objects.filter(pk=demo_cluster.pk).update(api_server_url=url, arm_resource_id="")
        demo_cluster.refresh_from_db()
        with pytest.raises(CloudError, match="ClusterNotFromAzure|no API server read from Azure"):
            kubernetes.get_service_account(demo_cluster, "team-payments", "payments-api")
    Cluster.objects.filter(pk=demo_cluster.pk).update(api_server_url=listener.url, arm_resource_id=DEMO_CLUSTER_ID)
    demo_cluster.refresh_from_db()
    with pytest.raises(CloudError):
        kubernetes.get_service_account(demo_cluster, "team-payments", "payments-api")
    assert listener.requests == []


# ---- changing a cluster's connection -----------------------------------------------------------------------


@pytest.fixture
def with_identity(demo_cluster: Cluster, requester) -> IdentityRequest:
    req = submitted(demo_cluster, requester)
    IdentityRequest.objects.filter(pk=req.pk).update(status=Status.READY)
    return req


def test_a_connection_change_is_refused_while_identities_exist(admin, cloud, demo_cluster, with_identity) -> None:
    url = reverse("admin:requests_app_cluster_change", args=[demo_cluster.pk])
    data = admin_cluster_form(name="aks-demo", arm_resource_id="", api_auth="kubeconfig", oidc_issuer_url="")
    data["oidc_issuer_url"] = demo_cluster.oidc_issuer_url
    response = client_for(admin).post(url, data)
    assert response.status_code == 200
    assert "cannot change while 1 identities exist" in response.content.decode()
    demo_cluster.refresh_from_db()
    assert demo_cluster.api_auth == "entra" and demo_cluster.arm_resource_id == DEMO_CLUSTER_ID
    with pytest.raises(clusters.ClusterConfigError, match="cannot change while 1 identities exist"):
        clusters.register(spec(name="aks-demo", api_auth="kubeconfig", oidc_issuer_url=demo_cluster.oidc_issuer_url))


def test_a_connection_change_is_audited_with_before_and_after(admin, cloud, demo_cluster: Cluster) -> None:
    url = reverse("admin:requests_app_cluster_change", args=[demo_cluster.pk])
    issuer, server = demo_cluster.oidc_issuer_url, demo_cluster.api_server_url
    data = admin_cluster_form(name="aks-demo", arm_resource_id="", api_auth="kubeconfig", oidc_issuer_url=issuer)
    response = client_for(admin).post(url, data)
    assert response.status_code == 302, response.content.decode()
    event = AuditEvent.objects.filter(action="cluster.updated").last()
    changes = event.details["connection"]
    assert changes["api_auth"] == {"before": "entra", "after": "kubeconfig"}
    assert changes["arm_resource_id"] == {"before": DEMO_CLUSTER_ID, "after": ""}
    assert changes["api_server_url"] == {"before": server, "after": ""}
    assert "oidc_issuer_url" not in changes  # unchanged


# ---- drift ----------------------------------------------------------------------------------------------------


def test_reconcile_finds_a_stored_connection_that_azure_does_not_say(demo_cluster: Cluster, listener) -> None:
    Cluster.objects.filter(pk=demo_cluster.pk).update(api_server_url=f"{listener.https_url}/k8s")
    summary = drift.reconcile_all()
    assert summary.clusters_drifted == ["aks-demo"]
    demo_cluster.refresh_from_db()
    assert demo_cluster.connection_drift["api_server_url"]["stored"] == f"{listener.https_url}/k8s"
    event = AuditEvent.objects.get(action="cluster.connection_drift")
    assert event.cluster == demo_cluster
    with pytest.raises(SystemExit) as exited:
        call_command("reconcile")
    assert exited.value.code == 1
    # The admin's "re-read from Azure" settles it (no identities hold the cluster), audited.
    changes = clusters.refresh_connection(demo_cluster, actor=None)
    assert changes["api_server_url"]["after"].startswith("https://localhost:")
    assert drift.reconcile_all().clusters_drifted == []
    assert AuditEvent.objects.filter(action="cluster.connection_changed").count() == 1
    assert listener.requests == []


def test_a_cluster_gone_from_azure_is_drift(demo_cluster: Cluster) -> None:
    Cluster.objects.filter(pk=demo_cluster.pk).update(arm_resource_id=DEMO_CLUSTER_ID.rsplit("/", 1)[0] + "/aks-gone")
    assert drift.reconcile_all().clusters_drifted == ["aks-demo"]
    demo_cluster.refresh_from_db()
    assert "was not found" in demo_cluster.connection_drift["arm_resource_id"]["azure"]
