"""Every outbound call has a connect and a read timeout: a system that hangs is a transient failure, retried.

The emulator is made to hang (fault injection: it holds the call HANG_MS, then drops the connection without ever
answering) while the portal's read timeout is READ_TIMEOUT. With the timeout in place the adapter gives up after
READ_TIMEOUT with a transient CloudError (code `Timeout`) naming the system; without it the call would wait for
the drop and fail differently (a `ConnectionError`), so each row of these tables fails if its timeout is taken out.
No assertion is about time. The SDKs' own retries are off (PORTAL_ARM_RETRY_TOTAL=0), so the portal's are seen.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings

from portal import settings as configured
from requests_app import naming, provisioning
from requests_app.auth import entra
from requests_app.cloud import aks, graph, identities, keyvault_keys, kubernetes, rbac, verification
from requests_app.cloud.credentials import portal_credential
from requests_app.cloud.errors import CloudError
from requests_app.models import AuditEvent, IdentityRequest, Status, Step
from tests.requests_app.factories import approved
from tests.requests_app.test_fault_matrix import Sleeps  # the `sleep` seam: records each wait, never sleeps

from ..portal_fixtures import DEMO_CLUSTER_ID, SUBSCRIPTION, TENANT, VAULT_SCOPE

READ_TIMEOUT = 0.5  # seconds: far above what the emulator takes to answer, far below HANG_MS
HANG_MS = 5000
NS, SA = "team-payments", "payments-api"
IDENTITY = naming.identity_name("aks-demo", NS, SA)
RG = "rg-aks-demo-identities"
TOKEN = r"/oauth2/v2.0/token$"
ALEX = "44444444-4444-4444-8444-444444444444"

# A hung call must not hold the test either: without its timeout it would end at the drop, well within this.
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def short(cloud):
    cloud.PORTAL_READ_TIMEOUT_SECONDS = READ_TIMEOUT
    cloud.PORTAL_CONNECT_TIMEOUT_SECONDS = 2.0
    cloud.PORTAL_ARM_RETRY_TOTAL = 0  # azure-core would otherwise retry a timed-out call itself


def hang(control, method: str, path: str) -> None:
    """The emulator holds the next matching call HANG_MS and then closes the connection without answering."""
    control.add_fault(path, method=method, latency_ms=HANG_MS, drop=True, times=1)


def prefetch_portal_tokens() -> None:
    """The portal's own tokens, fetched (and cached) now, so a hang on the token endpoint hits the call under test."""
    portal_credential().get_token("https://management.azure.com/.default")
    portal_credential().get_token(f"{settings.AKS_SERVER_APP_ID}/.default")


# ---- each adapter: a hung call comes out as a transient CloudError naming the system --------------------------


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # what hangs
    call: Callable[[pytest.FixtureRequest], Any]  # the adapter call, given the test's fixtures
    says: str  # how the error message starts: the system that did not answer, and what for
    before: Callable[[pytest.FixtureRequest], Any] = lambda r: None  # set-up that must not meet the hang


def issuer(request: pytest.FixtureRequest) -> str:
    emu = request.getfixturevalue("emu")
    return emu.cluster_issuer(emu.config.cluster("aks-demo"))


def cluster(request: pytest.FixtureRequest):
    return request.getfixturevalue("demo_cluster")


ADAPTERS = {
    "arm-identities": Case(
        "GET",
        r"/userAssignedIdentities/id-hung$",
        lambda r: identities.get_identity(SUBSCRIPTION, RG, "id-hung"),
        "Azure Resource Manager did not answer in time for the lookup of managed identity id-hung",
    ),
    "arm-federated-credentials": Case(
        "PUT",
        r"/federatedIdentityCredentials/fic-hung$",
        lambda r: identities.put_federated_credential(
            SUBSCRIPTION, RG, "id-hung", "fic-hung", issuer="https://localhost:1/oidc/x/", subject="s"
        ),
        "Azure Resource Manager did not answer in time for the federated credential fic-hung",
    ),
    "arm-rbac": Case(
        "GET",
        r"/roleAssignments$",
        lambda r: rbac.list_assignments(VAULT_SCOPE, "9a8b7c6d-0000-4000-8000-00000000b001"),
        "Azure Resource Manager did not answer in time for the role assignment lookup",
    ),
    "arm-aks-pipeline": Case(
        "GET",
        r"/managedClusters/aks-demo$",
        lambda r: aks.read_connection(DEMO_CLUSTER_ID),
        "Azure Resource Manager did not answer in time for the AKS cluster aks-demo",
    ),
    "key-vault": Case(
        "GET",
        r"^/keys/audit-checkpoints",
        lambda r: keyvault_keys.get_key(f"{r.getfixturevalue('emu').url}/keys/audit-checkpoints"),
        "Key Vault did not answer in time for reading key audit-checkpoints",
    ),
    "entra-portal-token": Case(
        "POST",
        TOKEN,
        lambda r: identities.get_identity(SUBSCRIPTION, RG, "id-hung"),
        "Entra ID did not answer in time for the portal's token for the lookup of managed identity id-hung",
    ),
    "entra-token-exchange": Case(
        "POST",
        TOKEN,
        lambda r: verification.exchange(TENANT, "00000000-0000-4000-8000-000000000000", "a.cluster.token"),
        "Entra ID did not answer in time for the token exchange",
        before=lambda r: prefetch_portal_tokens(),  # the hang must meet the exchange, not the portal's tokens
    ),
    "graph": Case(
        "GET",
        rf"/graph/v1\.0/users/{ALEX}$",
        lambda r: graph.user_access(ALEX),
        "Microsoft Graph did not answer in time for a person's account, groups and roles",
    ),
    "entra-graph-token": Case(
        "POST",
        TOKEN,
        lambda r: graph.user_access(ALEX),
        "Entra ID did not answer in time for the portal's Graph token",
    ),
    "oidc-issuer": Case(
        "GET",
        r"^/oidc/.+/\.well-known/openid-configuration$",
        lambda r: aks.check_issuer(issuer(r)),
        "The OIDC issuer localhost:",
    ),
    "kubernetes-read": Case(
        "GET",
        r"/namespaces/team-payments/serviceaccounts/sa-hung$",
        lambda r: kubernetes.get_service_account(cluster(r), NS, "sa-hung"),
        "The Kubernetes API of cluster aks-demo did not answer in time for the read of ServiceAccount "
        "team-payments/sa-hung",
        before=cluster,  # registered (through ARM) before anything hangs
    ),
    "kubernetes-write": Case(
        "POST",
        r"/namespaces/team-payments/serviceaccounts$",
        lambda r: kubernetes.create_service_account(cluster(r), NS, "sa-hung", labels={}, annotations={}),
        "The Kubernetes API of cluster aks-demo did not answer in time for the ServiceAccount team-payments/sa-hung",
        before=cluster,
    ),
    "entra-cluster-token": Case(
        "POST",
        TOKEN,
        lambda r: kubernetes.get_service_account(cluster(r), NS, "sa-hung"),
        "Entra ID did not answer in time for the portal's token for cluster aks-demo (the read of ServiceAccount",
        before=cluster,  # with the portal's ARM token; its token for the cluster's API is the one that hangs
    ),
}


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_a_call_that_hangs_is_a_transient_timeout_naming_the_system(request, cloud, control, name) -> None:
    case = ADAPTERS[name]
    case.before(request)
    hang(control, case.method, case.path)
    with pytest.raises(CloudError) as info:
        case.call(request)
    e = info.value
    assert (e.code, e.permanent) == ("Timeout", False), e.message
    assert e.message.startswith(case.says), e.message
    assert "did not answer in time" in e.message and "it is retried" in e.message
    assert [f["hits"] for f in control.faults()] == [1]  # the hang was really met, once


# ---- Entra sign-in (msal): a hang is a sign-in that can be tried again ----------------------------------------


def test_a_sign_in_entra_does_not_answer_in_time_can_be_tried_again(cloud, control) -> None:
    # msal fetches the tenant's discovery document first, through the portal's session.
    hang(control, "GET", r"/v2\.0/\.well-known/openid-configuration$")
    with pytest.raises(entra.SignInError) as info:
        entra.begin_sign_in("http://localhost:8000/auth/callback")
    assert (info.value.reason, info.value.permanent) == ("timeout", False)
    assert info.value.message == "Microsoft Entra ID did not answer in time. Try again in a moment."
    assert entra.begin_sign_in("http://localhost:8000/auth/callback")["auth_uri"]  # and again, it works


def test_graph_not_answering_in_time_at_sign_in_can_be_tried_again(cloud, control) -> None:
    hang(control, "POST", r"/graph/v1\.0/me/getMemberObjects$")
    with pytest.raises(entra.SignInError) as info:
        entra.member_groups("a-graph-token")
    assert (info.value.reason, info.value.permanent) == ("graph", False)
    assert "Microsoft Graph (it did not answer in time)" in info.value.message


# ---- through provisioning: the step waits, tries again, and the request ends ready ------------------------------


@pytest.fixture
def req(demo_cluster, requester, approver) -> IdentityRequest:
    return approved(demo_cluster, requester, approver, sa=SA)


ARM_SAYS = "Azure Resource Manager did not answer in time"
K8S_SAYS = "The Kubernetes API of cluster aks-demo did not answer in time"
PROVISIONING = [
    # step, what hangs (method, path), how the step's error starts
    pytest.param("identity", "PUT", rf"/userAssignedIdentities/{IDENTITY}$", ARM_SAYS, id="identity-arm-write"),
    pytest.param("fic", "PUT", r"/federatedIdentityCredentials/", ARM_SAYS, id="fic-arm-write"),
    pytest.param("roles", "GET", r"/roleDefinitions/", ARM_SAYS, id="roles-arm-read"),
    pytest.param("roles", "PUT", r"/roleAssignments/", ARM_SAYS, id="roles-arm-write"),
    pytest.param("service_account", "POST", rf"/namespaces/{NS}/serviceaccounts$", K8S_SAYS, id="sa-k8s-create"),
    # The ServiceAccount step mints the first token, which the verification exchanges.
    pytest.param("service_account", "POST", rf"/serviceaccounts/{SA}/token$", K8S_SAYS, id="sa-k8s-token-request"),
    pytest.param(
        "verify", "POST", TOKEN, "Entra ID did not answer in time for the token exchange", id="verify-entra-exchange"
    ),
]


@pytest.mark.parametrize(("step", "method", "path", "says"), PROVISIONING)
def test_a_step_whose_call_hangs_is_retried_and_the_request_ends_ready(req, control, step, method, path, says) -> None:
    prefetch_portal_tokens()  # so a hang on the token endpoint is the exchange's
    hang(control, method, path)
    assert_retried_once_and_ready(req, control, step, says)


def test_a_hung_token_request_of_the_portals_own_credential_is_retried(req, control) -> None:
    # Registering the cluster fetched the portal's ARM token; its token for the cluster's API is fetched first at
    # the ServiceAccount step, and that is the request that hangs.
    hang(control, "POST", TOKEN)
    assert_retried_once_and_ready(
        req, control, "service_account", "Entra ID did not answer in time for the portal's token for cluster aks-demo"
    )


def assert_retried_once_and_ready(req: IdentityRequest, control, step: str, says: str) -> None:
    sleeps = Sleeps()
    provisioning.provision(req.pk, sleep=sleeps)
    req.refresh_from_db()
    assert req.status == Status.READY, req.failure_message
    assert [f["hits"] for f in control.faults()] == [1]
    [waited] = AuditEvent.objects.filter(request=req, action=f"step.{step}.retrying")
    assert (waited.details["code"], waited.details["permanent"]) == ("Timeout", False)
    assert waited.details["error"].startswith(says), waited.details["error"]
    assert Step.objects.get(request=req, name=step).attempts == 2
    assert len(sleeps.delays) == 1


# ---- the settings ----------------------------------------------------------------------------------------------


def test_the_defaults_are_five_seconds_to_connect_and_thirty_to_answer() -> None:
    assert (configured.PORTAL_CONNECT_TIMEOUT_SECONDS, configured.PORTAL_READ_TIMEOUT_SECONDS) == (5.0, 30.0)


@pytest.mark.parametrize("name", ["PORTAL_CONNECT_TIMEOUT_SECONDS", "PORTAL_READ_TIMEOUT_SECONDS"])
@pytest.mark.parametrize("value", ["0", "-1", "301", "inf", "nan", "lots"])
def test_a_timeout_that_makes_no_sense_stops_the_portal_starting(name, value, monkeypatch) -> None:
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=name):
        importlib.reload(configured)
    monkeypatch.delenv(name)
    importlib.reload(configured)
