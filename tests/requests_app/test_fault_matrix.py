"""The fault matrix: every applicable row of failure-modes.md at every provisioning and revocation step.

Faults are injected through the emulator's control API, never by patching. After a transient fault the
request ends ready (or revoked) with `step.<name>.retrying` events and more than one attempt; after a
permanent one it fails at that step with a message that says what to do, and a retry (fault cleared) then
finishes it. After every scenario the emulator holds each resource of the request at most once (exactly once
when ready), and after revocation nothing of it is left.

The step's retry waits go through the `sleep` seam (recorded, not slept), so Retry-After is checked as the
delay asked for, without the suite waiting for it. The SDKs' own retries are off (PORTAL_ARM_RETRY_TOTAL=0):
the portal's retry logic is what is exercised here.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings

from requests_app import provisioning, workflow
from requests_app.cloud import kubernetes
from requests_app.cloud.credentials import portal_credential
from requests_app.models import AuditEvent, IdentityRequest, Status, Step
from tests.requests_app.factories import approved

NS, SA = "team-payments", "payments-api"
IDENTITY = "aks-demo_team-payments_payments-api"
PROVISION_STEPS = ["identity", "fic", "roles", "service_account", "verify"]
REVOKE_STEPS = ["revoke_service_account", "revoke_roles", "revoke_fic", "revoke_identity"]
TOKEN = r"/oauth2/v2.0/token$"
# Targets named for a call rather than a step, and the step that makes the call.
STEP_OF = {"service_account_token": "service_account"}
OURS = {"app.kubernetes.io/managed-by": "workload-identity-portal"}


@dataclass(frozen=True)
class Target:
    """The call of a step that a fault hits: method, path pattern, which surface answers, how it is named."""

    method: str
    path: str
    surface: str  # "arm", "k8s" or "entra": decides the error codes that make sense
    what: str  # words the failure message must contain, naming the thing that failed


TARGETS = {
    "identity": Target("PUT", rf"/userAssignedIdentities/{IDENTITY}$", "arm", f"the managed identity {IDENTITY}"),
    "fic": Target("PUT", r"/federatedIdentityCredentials/", "arm", "the federated credential"),
    "roles": Target("PUT", r"/roleAssignments/", "arm", "the role assignment Key Vault Secrets User"),
    "service_account": Target("POST", rf"/namespaces/{NS}/serviceaccounts$", "k8s", f"ServiceAccount {NS}/{SA}"),
    # The ServiceAccount step mints the first token (the verification exchanges it): its TokenRequest.
    "service_account_token": Target(
        "POST", rf"/serviceaccounts/{SA}/token$", "k8s", f"a token for ServiceAccount {NS}/{SA}"
    ),
    "revoke_service_account": Target(
        "DELETE", rf"/serviceaccounts/{SA}$", "k8s", f"the deletion of ServiceAccount {NS}/{SA}"
    ),
    "revoke_roles": Target("DELETE", r"/roleAssignments/", "arm", "the deletion of a role assignment"),
    "revoke_fic": Target("DELETE", r"/federatedIdentityCredentials/", "arm", "the deletion of federated credential"),
    "revoke_identity": Target(
        "DELETE", rf"/userAssignedIdentities/{IDENTITY}$", "arm", f"the deletion of managed identity {IDENTITY}"
    ),
}
# The first read each step makes: reads fail transiently too, and are retried like writes. The identity,
# credential and ServiceAccount steps read only on a later attempt (a first attempt writes at once): see
# test_a_later_attempt_reads_first_and_its_failed_read_is_retried.
LATER_READS = {
    "identity": ("GET", rf"/userAssignedIdentities/{IDENTITY}$"),
    "fic": ("GET", r"/federatedIdentityCredentials$"),
    "service_account": ("GET", rf"/serviceaccounts/{SA}$"),
}
READS = {
    "verify": ("POST", TOKEN),  # the token exchange at Entra, after the TokenRequest
    "revoke_service_account": ("GET", rf"/serviceaccounts/{SA}$"),
    "revoke_roles": ("GET", r"/roleAssignments$"),
    "revoke_fic": ("GET", r"/federatedIdentityCredentials$"),
    # revoke_identity's read is the same GET as revoke_fic's first one; its DELETE is covered above.
}


# ---- the transient rows, at every step -------------------------------------------------------------------------


@dataclass(frozen=True)
class Transient:
    row: str
    rules: list[dict[str, Any]]  # fault specs without the path and method (those come from the step's target)
    retry_after: float | None = None  # the wait the portal must have asked for before each retry

    @property
    def hits(self) -> int:
        return sum(r["times"] for r in self.rules)


def throttled(surface: str) -> Transient:
    code = {"arm": "SubscriptionRequestsThrottled", "k8s": "TooManyRequests"}[surface]  # row 7
    return Transient("429-retry-after", [{"status": 429, "code": code, "retry_after": 1, "times": 2}], 1.0)


SERVER_ERRORS = Transient("5xx", [{"status": s, "times": 1} for s in (500, 502, 503, 504)])  # row 8
CONNECTION_RESET = Transient("connection-reset", [{"drop": True, "times": 2}])  # row 8
FIC_CONFLICT = Transient(  # row 1
    "fic-409-concurrent-writes",
    [{"status": 409, "code": "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity", "times": 2}],
)


def transient_cases() -> list[Any]:
    cases = []
    for step, target in TARGETS.items():
        for fault in (throttled(target.surface), SERVER_ERRORS, CONNECTION_RESET):
            cases.append(pytest.param(step, target.method, target.path, fault, id=f"{step}-{fault.row}"))
        if step in ("fic", "revoke_fic"):
            cases.append(pytest.param(step, target.method, target.path, FIC_CONFLICT, id=f"{step}-{FIC_CONFLICT.row}"))
    for step, (method, path) in READS.items():
        fault = Transient("read-503", [{"status": 503, "times": 1}])
        cases.append(pytest.param(step, method, path, fault, id=f"{step}-{fault.row}"))
    # Rows 4 and 5 at the roles step; 14 (a stale write on the SA) is its own test below.
    cases.append(
        pytest.param(
            "roles",
            "PUT",
            r"/roleAssignments/",
            Transient("principal-not-found", [{"status": 400, "code": "PrincipalNotFound", "times": 2}]),
            id="roles-principal-not-found",
        )
    )
    cases.append(
        pytest.param(
            "roles",
            "PUT",
            r"/roleAssignments/",
            Transient("exists-but-not-listed", [{"status": 409, "code": "RoleAssignmentExists", "times": 1}]),
            id="roles-409-exists-not-listed-yet",
        )
    )
    # Row 8 at Entra itself: the token exchange's connection reset (its 503 is in READS above).
    cases.append(
        pytest.param("verify", "POST", TOKEN, CONNECTION_RESET, id="verify-exchange-connection-reset"),
    )
    # Row 9: Entra has not seen the new credential yet (the fault-rule flavour; the clock flavour is below).
    cases.append(
        pytest.param(
            "verify",
            "POST",
            TOKEN,
            Transient("aadsts70021", [{"status": 400, "code": "AADSTS70021", "times": 2}]),
            id="verify-aadsts70021-fault",
        )
    )
    return cases


# ---- the permanent rows, at every step -------------------------------------------------------------------------


@dataclass(frozen=True)
class Permanent:
    row: str
    rule: dict[str, Any]
    says: list[str] = field(default_factory=list)  # what the failure message must contain besides the target


def permanent_cases() -> list[Any]:
    cases = []
    for step, target in TARGETS.items():
        if target.surface == "arm":
            forbidden = Permanent(
                "403-authorization-failed",
                {"status": 403, "code": "AuthorizationFailed"},
                ["lacks the Azure permission", "(AuthorizationFailed)", "Ask an admin to grant it"],
            )
            invalid = Permanent(
                "400-validation",
                {"status": 400, "code": "InvalidRequestContent", "message": "The request content was invalid."},
                ["The request content was invalid", "(InvalidRequestContent)"],
            )
        else:
            forbidden = Permanent(
                "403-forbidden", {"status": 403}, ["The portal's identity needs Kubernetes RBAC", "(Forbidden)"]
            )
            invalid = Permanent(
                "422-validation", {"status": 422, "message": "metadata.name: Invalid value"}, ["(Invalid)"]
            )
        for fault in (forbidden, invalid):
            cases.append(pytest.param(step, target, fault, id=f"{step}-{fault.row}"))
    # Row 6 at the roles step: the GUID was used for another principal (cannot happen with our naming; if it
    # ever does, it must fail loudly rather than loop).
    cases.append(
        pytest.param(
            "roles",
            TARGETS["roles"],
            Permanent("guid-reused", {"status": 400, "code": "RoleAssignmentUpdateNotPermitted"}, ["(RoleAssignment"]),
            id="roles-400-update-not-permitted",
        )
    )
    # Row 10 at verification: a subject mismatch is configuration, not propagation: fail at once.
    cases.append(
        pytest.param(
            "verify",
            Target("POST", TOKEN, "entra", "Entra ID refused the cluster's token"),
            Permanent(
                "aadsts700213",
                {"status": 401, "code": "AADSTS700213"},
                ["the token's subject (the ServiceAccount) does not match", f"system:serviceaccount:{NS}:{SA}"],
            ),
            id="verify-aadsts700213",
        )
    )
    return cases


# ---- fixtures and helpers ----------------------------------------------------------------------------------------


class Sleeps:
    """The `sleep` seam of provisioning: records each wait instead of sleeping; may move the emulator clock."""

    def __init__(self, control=None, advance: float = 0.0):
        self.delays: list[float] = []
        self.control, self.advance = control, advance

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.control is not None and self.advance:
            self.control.advance_clock(self.advance)


@pytest.fixture(autouse=True)
def fast(cloud, emu):
    cloud.PORTAL_ARM_RETRY_TOTAL = 0  # azure-core would otherwise retry 5xx/429 itself (honouring Retry-After)
    # Just the emulator's CA: every SDK client loads it afresh, and the full bundle takes ~75 ms a time.
    cloud.PORTAL_CA_BUNDLE = str(emu.tls.ca_cert)
    # The portal's own tokens are fetched (and cached) first, so faults on the token endpoint hit the exchange.
    portal_credential().get_token("https://management.azure.com/.default")
    portal_credential().get_token(f"{settings.AKS_SERVER_APP_ID}/.default")


@pytest.fixture
def req(demo_cluster, requester, approver) -> IdentityRequest:
    return approved(demo_cluster, requester, approver, sa=SA)


@pytest.fixture
def ready(req, admin, control) -> IdentityRequest:
    """A ready request whose revocation has been asked for (and not run yet)."""
    provisioning.provision(req.pk)
    assert_exactly_once(control, req)
    workflow.revoke_request(fresh(req), actor=admin, reason="the service was retired")
    return req


def fresh(req: IdentityRequest) -> IdentityRequest:
    return IdentityRequest.objects.select_related("cluster").get(pk=req.pk)


def steps(req: IdentityRequest) -> dict[str, Step]:
    return {s.name: s for s in Step.objects.filter(request=req)}


def ours(control, req: IdentityRequest) -> dict[str, list[dict[str, Any]]]:
    """Everything in the emulator that belongs to the request: identity, FICs, role assignments, our SA."""
    state = control.state()
    req = fresh(req)
    identities = [i for i in state["identities"].values() if i["name"] == IDENTITY]
    ids = {i["id"].lower() for i in identities} | ({req.identity_resource_id.lower()} - {""})
    return {
        "identities": identities,
        "fics": [
            f
            for f in state["fics"].values()
            if f["id"].lower().rsplit("/federatedidentitycredentials/", 1)[0] in ids
            or f["properties"]["subject"] == req.subject
        ],
        "role_assignments": [
            r
            for r in state["role_assignments"].values()
            if req.principal_id and r["properties"]["principalId"] == req.principal_id
        ],
        "service_accounts": [
            s
            for s in state["service_accounts"].values()
            if (s["metadata"]["namespace"], s["metadata"]["name"]) == (NS, SA)
            and s["metadata"].get("labels") == OURS
            and (s["metadata"].get("annotations") or {}).get(provisioning.REQUEST_ANNOTATION) == str(req.pk)
        ],
    }


def assert_no_duplicates(control, req: IdentityRequest, *, since: int = 0) -> dict[str, list[dict[str, Any]]]:
    """At most one of each resource, and the call log shows at most one successful create of each (by the
    portal: calls before `since` were the test's own setup)."""
    found = ours(control, req)
    assert {k: len(v) for k, v in found.items() if len(v) > 1} == {}
    made = Counter(
        f"{c['method']} {c['path'].lower()}"
        for c in control.calls(since=since)
        if c["status"] == 201 and c["method"] in ("PUT", "POST") and not c["path"].endswith("/token")
    )
    assert {k: n for k, n in made.items() if n > 1} == {}
    return found


def assert_exactly_once(control, req: IdentityRequest, *, since: int = 0) -> None:
    assert fresh(req).status == Status.READY, fresh(req).failure_message
    found = assert_no_duplicates(control, req, since=since)
    assert {k: len(v) for k, v in found.items()} == {
        "identities": 1,
        "fics": 1,
        "role_assignments": 1,
        "service_accounts": 1,
    }


def assert_no_orphans(control, req: IdentityRequest) -> None:
    assert fresh(req).status == Status.REVOKED, fresh(req).failure_message
    assert {k: len(v) for k, v in ours(control, req).items()} == {
        "identities": 0,
        "fics": 0,
        "role_assignments": 0,
        "service_accounts": 0,
    }


def assert_retried(req: IdentityRequest, step: str, hits: int) -> None:
    row = steps(req)[step]
    assert (row.state, row.attempts) == (Step.State.SUCCEEDED, hits + 1)
    retrying = AuditEvent.objects.filter(request=req, action=f"step.{step}.retrying")
    assert retrying.count() == hits
    assert all(e.details["permanent"] is False for e in retrying)


def assert_failed_at(req: IdentityRequest, step: str) -> IdentityRequest:
    req = fresh(req)
    assert (req.status, req.failed_step) == (Status.FAILED, step)
    rows = steps(req)
    assert rows[step].state == Step.State.FAILED and rows[step].error == req.failure_message
    order = REVOKE_STEPS if step in REVOKE_STEPS else PROVISION_STEPS
    # The credential, role and ServiceAccount steps run at once: only what needs the failed step waits.
    # The verification needs the credential and the ServiceAccount, not the roles.
    needs = {"identity": PROVISION_STEPS[1:], "fic": ["verify"], "service_account": ["verify"], "roles": []}
    later = needs.get(step, order[order.index(step) + 1 :])
    assert all(rows[s].state == Step.State.PENDING for s in later)
    assert AuditEvent.objects.filter(request=req, action=f"step.{step}.failed").count() == 1
    assert not AuditEvent.objects.filter(request=req, action=f"step.{step}.retrying").exists()
    return req


def run(step: str, req: IdentityRequest, sleep: Sleeps) -> None:
    if step in REVOKE_STEPS:
        provisioning.revoke(req.pk, sleep=sleep)
    else:
        provisioning.provision(req.pk, sleep=sleep)


def request_for(step: str, request: pytest.FixtureRequest) -> IdentityRequest:
    """A request about to run `step`: approved for provisioning steps, ready and revoking for revocation.

    (Tests calling this take `demo_cluster` themselves, so the test database is set up before.)"""
    return request.getfixturevalue("ready" if step in REVOKE_STEPS else "req")


def assert_finished(step: str, control, req: IdentityRequest) -> None:
    if step in REVOKE_STEPS:
        assert_no_orphans(control, req)
    else:
        assert_exactly_once(control, req)


# ---- transient faults: the request finishes, after retries ------------------------------------------------------


@pytest.mark.parametrize(("step", "method", "path", "fault"), transient_cases())
def test_a_transient_fault_is_retried_and_the_request_finishes(
    request, demo_cluster, control, step, method, path, fault
) -> None:
    step = STEP_OF.get(step, step)
    req = request_for(step, request)
    for rule in fault.rules:
        control.add_fault(path, method=method, **rule)
    sleeps = Sleeps()
    run(step, req, sleeps)
    assert_finished(step, control, req)
    assert sum(r["hits"] for r in control.faults()) == fault.hits  # the fault was really hit, that often
    assert_retried(req, step, fault.hits)
    assert len(sleeps.delays) == fault.hits
    if fault.retry_after is not None:
        # Retry-After is honoured as given, never shortened (and shown on the request as the next attempt).
        assert all(d >= fault.retry_after for d in sleeps.delays)
        waits = AuditEvent.objects.filter(request=req, action=f"step.{step}.retrying")
        assert all(e.details["retry_in_seconds"] >= fault.retry_after for e in waits)


def test_a_stale_service_account_write_is_read_again_and_reapplied(req, control) -> None:
    # Row 14: our SA exists without its annotations, and the first PATCH hits a resourceVersion conflict.
    kubernetes.create_service_account(
        req.cluster, NS, SA, labels=OURS, annotations={provisioning.REQUEST_ANNOTATION: str(req.pk)}
    )
    control.add_fault(rf"/serviceaccounts/{SA}$", method="PATCH", status=409, code="Conflict", times=1)
    seq = control.last_seq()
    provisioning.provision(req.pk, sleep=Sleeps())
    assert_exactly_once(control, req, since=seq)
    assert_retried(req, "service_account", 1)
    assert len(control.calls(method="PATCH", path="serviceaccounts")) == 2
    assert len(control.calls(method="GET", path=rf"/serviceaccounts/{SA}$")) == 2  # read again before re-applying


def test_a_credential_still_propagating_is_retried_until_entra_knows_it(req, control) -> None:
    # Row 9 with the emulator's own propagation delay: each wait moves the emulator clock on by 10 s.
    control.settings(fic_propagation_seconds=25)
    sleeps = Sleeps(control, advance=10)
    provisioning.provision(req.pk, sleep=sleeps)
    assert_exactly_once(control, req)
    assert_retried(req, "verify", 3)
    codes = {e.details["code"] for e in AuditEvent.objects.filter(request=req, action="step.verify.retrying")}
    assert codes == {"AADSTS70021"}


@pytest.mark.parametrize("step", list(LATER_READS))
def test_a_later_attempt_reads_first_and_its_failed_read_is_retried(step, request, demo_cluster, control) -> None:
    req = request_for(step, request)
    target = TARGETS[step]
    method, path = LATER_READS[step]
    control.add_fault(target.path, method=target.method, status=503, times=1)  # the first attempt's write
    control.add_fault(path, method=method, status=503, times=1)  # the second attempt's read
    sleeps = Sleeps()
    run(step, req, sleeps)
    assert_finished(step, control, req)
    assert sum(r["hits"] for r in control.faults()) == 2
    assert_retried(req, step, 2)
    assert len(control.calls(method=method, path=path)) >= 2  # read on the second attempt, and again after it failed


def test_the_kubernetes_client_does_not_retry_on_its_own(req, control) -> None:
    # urllib3 retries GET 429/503 with Retry-After by itself unless told not to; the adapter turns that off,
    # so every 429 reaches the portal's retry logic (and its audit), one call per attempt. The ServiceAccount
    # step reads on its second attempt (the first one's create fails here).
    control.add_fault(r"/serviceaccounts$", method="POST", status=503, times=1)
    control.add_fault(rf"/serviceaccounts/{SA}$", method="GET", status=429, retry_after=1, times=1)
    sleeps = Sleeps()
    provisioning.provision(req.pk, sleep=sleeps)
    assert_exactly_once(control, req)
    assert_retried(req, "service_account", 2)
    assert sleeps.delays[1] == 1.0
    assert len(control.calls(method="GET", path=rf"/serviceaccounts/{SA}$")) == 2  # the 429, then the answer
    assert kubernetes.configuration(req.cluster).retries is False


# ---- permanent faults: failed at the step, with a message; a retry finishes ------------------------------------


@pytest.mark.parametrize(("step", "target", "fault"), permanent_cases())
def test_a_permanent_fault_fails_the_step_and_a_retry_finishes(
    request, demo_cluster, control, admin, step, target, fault
) -> None:
    step = STEP_OF.get(step, step)
    req = request_for(step, request)
    control.add_fault(target.path, method=target.method, times=1, **fault.rule)
    sleeps = Sleeps()
    run(step, req, sleeps)
    failed = assert_failed_at(req, step)
    assert sleeps.delays == []  # not retried
    for words in [target.what, *fault.says]:
        assert words in failed.failure_message
    assert_no_duplicates(control, req)
    retry(req, admin, step)
    assert_finished(step, control, req)


def retry(req: IdentityRequest, actor, step: str) -> None:
    workflow.retry_provisioning(fresh(req), actor=actor)
    run(step, req, Sleeps())


def test_a_service_account_owned_by_someone_else_fails_and_a_retry_after_its_removal_finishes(
    req, requester, control
) -> None:
    # Row 12.
    helm = {"app.kubernetes.io/managed-by": "Helm"}
    kubernetes.create_service_account(req.cluster, NS, SA, labels=helm, annotations={"meta.helm.sh/release-name": "p"})
    seq = control.last_seq()
    provisioning.provision(req.pk, sleep=Sleeps())
    failed = assert_failed_at(req, "service_account")
    assert f"A ServiceAccount {NS}/{SA} already exists on cluster aks-demo" in failed.failure_message
    assert "app.kubernetes.io/managed-by=Helm" in failed.failure_message
    assert_no_duplicates(control, req)
    kubernetes.delete_service_account(req.cluster, NS, SA)  # its owners gave it up
    retry(req, requester, "service_account")
    assert_exactly_once(control, req, since=seq)


def test_a_missing_namespace_fails_and_a_retry_after_it_exists_finishes(req, requester, control) -> None:
    # Row 13.
    control.delete_namespace("aks-demo", NS)
    provisioning.provision(req.pk, sleep=Sleeps())
    failed = assert_failed_at(req, "service_account")
    assert failed.failure_message == (
        f"The namespace {NS} does not exist on cluster aks-demo. "
        "Ask the cluster's DevOps team to create it, then retry."
    )
    assert_no_duplicates(control, req)
    control.add_namespace("aks-demo", NS)
    retry(req, requester, "service_account")
    assert_exactly_once(control, req)


def test_a_principal_missing_beyond_its_window_fails_and_a_retry_finishes(req, requester, control, settings) -> None:
    # Row 4, bounded: the replication window is real time, so this one sleeps (50 ms in all).
    settings.PORTAL_REPLICATION_WINDOW_SECONDS = 0.05
    control.add_fault(r"/roleAssignments/", method="PUT", status=400, code="PrincipalNotFound")
    provisioning.provision(req.pk, sleep=time.sleep)
    control.clear_faults()
    failed = fresh(req)
    assert (failed.status, failed.failed_step) == (Status.FAILED, "roles")
    assert "(PrincipalNotFound). Retry in a minute. The portal gave up after" in failed.failure_message
    assert_no_duplicates(control, req)
    retry(req, requester, "roles")
    assert_exactly_once(control, req)


def test_a_credential_not_propagated_within_its_window_fails_and_a_retry_finishes(
    req, requester, control, settings
) -> None:
    # Row 9, bounded: Entra still does not know the credential when the verification window runs out.
    settings.PORTAL_VERIFY_WINDOW_SECONDS = 0.05
    control.settings(fic_propagation_seconds=600)
    provisioning.provision(req.pk, sleep=time.sleep)
    failed = fresh(req)
    assert (failed.status, failed.failed_step) == (Status.FAILED, "verify")
    assert "Entra ID does not know the new federated credential yet (AADSTS70021)" in failed.failure_message
    assert "The portal gave up after" in failed.failure_message
    assert_no_duplicates(control, req)
    control.advance_clock(600)  # propagated by now (the portal's cached tokens still valid)
    retry(req, requester, "verify")
    assert_exactly_once(control, req)


# ---- revocation: order, and what is not ours -------------------------------------------------------------------


def test_revocation_removes_everything_in_order(ready, control) -> None:
    # Row 15: nothing may point at a principal that is already gone.
    seq = control.last_seq()
    provisioning.revoke(ready.pk, sleep=Sleeps())
    assert_no_orphans(control, ready)
    deletes = [c["path"] for c in control.calls(since=seq, method="DELETE")]
    kinds = ["serviceaccounts/", "roleAssignments/", "federatedIdentityCredentials/", "userAssignedIdentities/"]
    assert [next(k for k in kinds if k in p) for p in deletes] == kinds


def test_revocation_leaves_a_service_account_that_is_no_longer_ours(ready, control) -> None:
    # Row 12 on the way out: the SA was replaced by someone else's meanwhile; it is not ours to delete.
    kubernetes.delete_service_account(ready.cluster, NS, SA)
    kubernetes.create_service_account(
        ready.cluster, NS, SA, labels={"app.kubernetes.io/managed-by": "Helm"}, annotations={}
    )
    provisioning.revoke(ready.pk, sleep=Sleeps())
    assert_no_orphans(control, ready)
    assert control.state()["service_accounts"][f"aks-demo/{NS}/{SA}"]["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "Helm"
    }
    assert "left alone" in steps(ready)["revoke_service_account"].detail["service_account"]


def test_revocation_finishes_when_the_namespace_is_gone(ready, control) -> None:
    # Row 13 on the way out: no namespace, no ServiceAccount; the Azure side is still removed.
    kubernetes.delete_service_account(ready.cluster, NS, SA)  # Kubernetes deletes a namespace's SAs with it
    control.delete_namespace("aks-demo", NS)
    provisioning.revoke(ready.pk, sleep=Sleeps())
    assert_no_orphans(control, ready)
    assert steps(ready)["revoke_service_account"].detail == {"service_account": "absent"}
